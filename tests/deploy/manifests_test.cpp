// The Kubernetes manifests in deploy/kubernetes: every document parses, and
// the fields that make the design hold agree with each other: probes and
// resources on the gateway, a policy sandgate itself loads, a Service that
// selects the gateway, and NetworkPolicies that let sandbox pods reach the
// gateway's listener and nothing else.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <set>

#include "sandgate/config/policy_file.h"

namespace sandgate {
namespace {

namespace fs = std::filesystem;

class Manifests : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto& e : fs::directory_iterator(fs::path(SANDGATE_SOURCE_DIR) / "deploy" / "kubernetes")) {
      if (e.path().extension() != ".yaml") continue;
      for (const auto& doc : YAML::LoadAllFromFile(e.path().string())) {
        ASSERT_TRUE(doc["apiVersion"] && doc["kind"] && doc["metadata"]["name"]) << e.path();
        docs_.emplace(doc["kind"].as<std::string>() + "/" + doc["metadata"]["name"].as<std::string>(), doc);
      }
    }
  }
  YAML::Node get(const std::string& key) {
    const auto it = docs_.find(key);
    if (it == docs_.end()) ADD_FAILURE() << "no " << key;
    return it == docs_.end() ? YAML::Node() : it->second;
  }
  std::map<std::string, YAML::Node> docs_;
};

std::map<std::string, std::string> labels(const YAML::Node& n) {
  std::map<std::string, std::string> out;
  for (const auto& kv : n) out[kv.first.as<std::string>()] = kv.second.as<std::string>();
  return out;
}

// matchLabels selects a set of labels when each of its pairs is among them.
bool selects(const YAML::Node& match, const std::map<std::string, std::string>& have) {
  for (const auto& [k, v] : labels(match))
    if (auto it = have.find(k); it == have.end() || it->second != v) return false;
  return true;
}

TEST_F(Manifests, TheGatewayHasProbesResourcesAndLeastPrivilege) {
  const auto deploy = get("Deployment/sandgate-gateway");
  const auto pod = deploy["spec"]["template"];
  EXPECT_TRUE(selects(deploy["spec"]["selector"]["matchLabels"], labels(pod["metadata"]["labels"])));
  const auto c = pod["spec"]["containers"][0];
  std::map<std::string, int> ports;
  for (const auto& p : c["ports"]) ports[p["name"].as<std::string>()] = p["containerPort"].as<int>();
  ASSERT_TRUE(ports.count("admin"));
  // Ready: not draining and the log being written; alive: the process
  // serves (a restart would lose the records a stuck log holds).
  EXPECT_EQ(c["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/readyz");
  EXPECT_EQ(c["livenessProbe"]["httpGet"]["path"].as<std::string>(), "/healthz");
  for (const auto* probe : {"readinessProbe", "livenessProbe"})
    EXPECT_EQ(c[probe]["httpGet"]["port"].as<std::string>(), "admin") << probe;
  for (const auto* kind : {"requests", "limits"})
    for (const auto* what : {"cpu", "memory"}) EXPECT_TRUE(c["resources"][kind][what]) << kind << " " << what;
  EXPECT_TRUE(c["securityContext"]["readOnlyRootFilesystem"].as<bool>());
  EXPECT_FALSE(c["securityContext"]["allowPrivilegeEscalation"].as<bool>());
  EXPECT_EQ(c["securityContext"]["capabilities"]["drop"][0].as<std::string>(), "ALL");
  EXPECT_TRUE(pod["spec"]["securityContext"]["runAsNonRoot"].as<bool>());
  EXPECT_EQ(pod["metadata"]["annotations"]["prometheus.io/port"].as<int>(), ports["admin"]);
  // The arguments listen where the ports say, and the key is outside the log's folder.
  std::set<int> listen_ports;
  bool admin = false;
  std::string log, key;
  for (const auto& a : c["args"]) {
    const auto arg = a.as<std::string>();
    if (arg.starts_with("--listen=0.0.0.0:")) listen_ports.insert(std::stoi(arg.substr(17)));
    admin |= arg == "--admin=0.0.0.0:" + std::to_string(ports["admin"]);
    if (arg.starts_with("--log=")) log = arg.substr(6);
    if (arg.starts_with("--log-key=")) key = arg.substr(10);
  }
  EXPECT_TRUE(admin);
  EXPECT_EQ(listen_ports, (std::set<int>{ports["proxy"], ports["reviewer"]}));
  EXPECT_NE(fs::path(log).parent_path(), fs::path(key).parent_path());
}

TEST_F(Manifests, ThePolicyInTheConfigMapLoadsAndNamesEveryListenersSandbox) {
  const auto text = get("ConfigMap/sandgate-policy")["data"]["policy.yaml"].as<std::string>();
  const auto set = config::load_policy_text(text, "configmap:policy.yaml", config::Format::yaml);
  ASSERT_TRUE(set.has_value()) << (set ? "" : set.error().front().to_string());
  const auto c = get("Deployment/sandgate-gateway")["spec"]["template"]["spec"]["containers"][0];
  for (const auto& a : c["args"]) {
    const auto arg = a.as<std::string>();
    const auto eq = arg.find('=', 9);
    if (arg.starts_with("--listen=") && eq != std::string::npos) {
      EXPECT_TRUE(set->named.count(arg.substr(eq + 1))) << arg;
    }
  }
}

TEST_F(Manifests, SandboxesReachTheGatewaysListenerAndNothingElse) {
  const auto service = get("Service/sandgate-gateway");
  const auto gateway_pod = get("Deployment/sandgate-gateway")["spec"]["template"];
  EXPECT_TRUE(selects(service["spec"]["selector"], labels(gateway_pod["metadata"]["labels"])));
  const auto cluster_ip = service["spec"]["clusterIP"].as<std::string>();
  std::map<std::string, int> service_ports;
  for (const auto& p : service["spec"]["ports"]) service_ports[p["targetPort"].as<std::string>()] = p["port"].as<int>();

  const auto agent = get("Pod/agent-example");
  EXPECT_EQ(agent["spec"]["runtimeClassName"].as<std::string>(), "kata");
  std::string proxy;
  for (const auto& e : agent["spec"]["containers"][0]["env"])
    if (e["name"].as<std::string>() == "HTTPS_PROXY") proxy = e["value"].as<std::string>();
  ASSERT_TRUE(proxy.starts_with("http://" + cluster_ip + ":")) << "no DNS needed: " << proxy;
  const int proxy_port = std::stoi(proxy.substr(proxy.rfind(':') + 1));

  const auto np = get("NetworkPolicy/sandboxes-egress-only-to-gateway");
  EXPECT_EQ(np["metadata"]["namespace"].as<std::string>(), agent["metadata"]["namespace"].as<std::string>());
  EXPECT_TRUE(selects(np["spec"]["podSelector"]["matchLabels"], labels(agent["metadata"]["labels"])));
  std::set<std::string> types;
  for (const auto& t : np["spec"]["policyTypes"]) types.insert(t.as<std::string>());
  EXPECT_TRUE(types.count("Egress") && types.count("Ingress"));
  ASSERT_EQ(np["spec"]["egress"].size(), 1u) << "one way out: the gateway (no DNS, no other pod)";
  const auto rule = np["spec"]["egress"][0];
  ASSERT_EQ(rule["to"].size(), 1u);
  EXPECT_TRUE(selects(rule["to"][0]["podSelector"]["matchLabels"], labels(gateway_pod["metadata"]["labels"])));
  EXPECT_EQ(rule["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as<std::string>(),
            get("Deployment/sandgate-gateway")["metadata"]["namespace"].as<std::string>());
  ASSERT_EQ(rule["ports"].size(), 1u) << "one listener: the namespace's sandbox class";
  EXPECT_EQ(rule["ports"][0]["port"].as<int>(), proxy_port);
  bool served = false;
  for (const auto& [name, port] : service_ports) served |= port == proxy_port;
  EXPECT_TRUE(served) << "the Service serves the port sandboxes use";

  // The gateway admits sandbox pods on its listeners only (and scrapes on admin).
  const auto in = get("NetworkPolicy/sandgate-gateway-ingress");
  EXPECT_TRUE(selects(in["spec"]["podSelector"]["matchLabels"], labels(gateway_pod["metadata"]["labels"])));
  const auto from_sandboxes = in["spec"]["ingress"][0];
  EXPECT_TRUE(selects(from_sandboxes["from"][0]["podSelector"]["matchLabels"], labels(agent["metadata"]["labels"])));
  std::set<int> admitted;
  for (const auto& p : from_sandboxes["ports"]) admitted.insert(p["port"].as<int>());
  EXPECT_TRUE(admitted.count(proxy_port));
  EXPECT_FALSE(admitted.count(9128)) << "sandboxes cannot reach the admin listener";
}

}  // namespace
}  // namespace sandgate
