// sandgate image build|ls|rm|prune: the guest image cache.
#include <sys/stat.h>

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>

#include "commands.h"
#include "images.h"
#include "paths.h"
#include "sandbox_state.h"

namespace sandgate::cli {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view image_usage = R"(usage: sandgate image build | ls [--json] | rm [-f] ID... | prune

The guest images sandboxes boot. Each is built from Debian packages (the
kernel, busybox, the tools in the root filesystem, through apt) and
sandgate's guest agent, and cached under the hash of those inputs: 'run'
builds one only when an input changed.

Commands:
  build        build the image for this sandgate (or find it) and print its folder
  ls           list the images: ID, CREATED, SIZE (with its root filesystem),
               KERNEL, and the sandboxes using it; --json for scripts
  rm ID...     remove images; one a running sandbox uses is kept unless -f
  prune        remove every image except the newest and those sandboxes use,
               and root filesystems no image uses any more

The cache is $SANDGATE_IMAGES, else $SANDGATE_HOME/images (~/.sandgate/images).

Examples:
  sandgate image build
  sandgate image ls
  sandgate image prune
)";

struct Image {
  std::string id, folder, kernel, rootfs;
  std::uintmax_t bytes = 0, rootfs_bytes = 0;
  std::int64_t created = 0;
  std::vector<std::string> used_by;  // running sandboxes
};

std::uintmax_t folder_bytes(const fs::path& dir) {
  std::uintmax_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file(ec) && !e.is_symlink(ec)) n += e.file_size(ec);
  return n;
}

// Running sandboxes by the image folder they booted.
std::map<std::string, std::vector<std::string>> images_in_use() {
  std::map<std::string, std::vector<std::string>> used;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(sandboxes_dir(), ec)) {
    const auto st = read_state(e.path());
    if (!st || !lock_held(e.path())) continue;
    if (const auto* v = st->if_contains("image"); v && v->is_string())
      used[fs::weakly_canonical(std::string(v->get_string()), ec).string()].push_back(e.path().filename().string());
  }
  return used;
}

std::vector<Image> list_images() {
  std::vector<Image> out;
  const auto used = images_in_use();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(images_dir(), ec)) {
    const auto name = e.path().filename().string();
    if (name.starts_with(".") || !fs::exists(e.path() / "manifest")) continue;
    Image im;
    im.id = name;
    im.folder = fs::weakly_canonical(e.path(), ec).string();
    std::ifstream manifest(e.path() / "manifest");
    for (std::string line; std::getline(manifest, line);) {
      if (line.starts_with("kernel ")) im.kernel = line.substr(7, line.find(' ', 7) - 7);
      if (line.starts_with("rootfs ")) im.rootfs = line.substr(7, line.find(' ', 7) - 7);
    }
    im.bytes = folder_bytes(e.path());
    const auto rootfs = e.path() / "rootfs.erofs";
    if (fs::exists(rootfs, ec)) im.rootfs_bytes = fs::file_size(rootfs, ec);
    struct stat st {};
    if (::stat((e.path() / "manifest").c_str(), &st) == 0) im.created = st.st_mtime;
    if (auto it = used.find(im.folder); it != used.end()) im.used_by = it->second;
    out.push_back(std::move(im));
  }
  std::sort(out.begin(), out.end(), [](const Image& a, const Image& b) { return a.created > b.created; });
  return out;
}

std::string mib(std::uintmax_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

std::string when(std::int64_t t) {
  char buf[32];
  const time_t tt = t;
  tm parts{};
  localtime_r(&tt, &parts);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &parts);
  return buf;
}

int image_ls(bool json) {
  const auto images = list_images();
  if (json) {
    boost::json::array a;
    for (const auto& im : images) {
      boost::json::array users;
      for (const auto& u : im.used_by) users.emplace_back(u);
      a.push_back({{"id", im.id}, {"folder", im.folder}, {"created", im.created}, {"bytes", im.bytes},
                   {"rootfs", im.rootfs}, {"rootfs_bytes", im.rootfs_bytes}, {"kernel", im.kernel},
                   {"used_by", users}});
    }
    std::cout << boost::json::serialize(a) << "\n";
    return 0;
  }
  std::printf("%-18s %-17s %-22s %-26s %s\n", "ID", "CREATED", "SIZE (+ROOTFS)", "KERNEL", "USED BY");
  for (const auto& im : images) {
    std::string users;
    for (const auto& u : im.used_by) users += (users.empty() ? "" : ",") + u;
    std::printf("%-18s %-17s %-22s %-26s %s\n", im.id.c_str(), when(im.created).c_str(),
                (mib(im.bytes) + " (+" + mib(im.rootfs_bytes) + ")").c_str(), im.kernel.c_str(),
                users.empty() ? "-" : users.c_str());
  }
  if (images.empty()) std::printf("(no images in %s; 'sandgate image build' makes one)\n", images_dir().c_str());
  return 0;
}

// Root filesystems that no remaining image links to.
void remove_orphan_rootfs() {
  std::set<std::string> kept;
  for (const auto& im : list_images()) kept.insert(im.rootfs);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(images_dir()) / ".rootfs", ec)) {
    if (kept.count(e.path().filename().string())) continue;
    fs::remove_all(e.path(), ec);
    std::cout << "removed root filesystem " << e.path().filename().string() << "\n";
  }
}

int image_rm(std::span<const std::string_view> ids, bool force) {
  const auto images = list_images();
  int status = 0;
  for (const auto id : ids) {
    const auto it = std::find_if(images.begin(), images.end(), [&](const Image& im) { return im.id == id; });
    if (it == images.end()) {
      std::cerr << "sandgate image rm: no image '" << id << "' (see 'sandgate image ls')\n";
      status = 1;
      continue;
    }
    if (!it->used_by.empty() && !force) {
      std::cerr << "sandgate image rm: " << id << " is in use by " << it->used_by.front()
                << "; stop it first, or pass -f\n";
      status = 1;
      continue;
    }
    std::error_code ec;
    fs::remove_all(it->folder, ec);
    if (ec) {
      std::cerr << "sandgate image rm: " << it->folder << ": " << ec.message() << "\n";
      status = 1;
      continue;
    }
    std::cout << "removed " << id << "\n";
  }
  remove_orphan_rootfs();
  return status;
}

}  // namespace

std::string images_dir() {
  const char* shared = std::getenv("SANDGATE_IMAGES");
  return shared && *shared ? std::string(shared) : sandgate_home() + "/images";
}

std::string find_or_build_image() {
  // The script reuses an image whose inputs have not changed, and says where it is.
  const std::string cmd = "'" + image_script_path() + "' '" + agent_path() + "' '" + images_dir() + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {};
  char line[4096] = {};
  std::string last;
  while (std::fgets(line, sizeof line, p)) last = line;
  if (::pclose(p) != 0) return {};
  while (!last.empty() && (last.back() == '\n' || last.back() == '\r')) last.pop_back();
  return last;
}

int image_command(std::span<const std::string_view> args) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    std::fputs(image_usage.data(), args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const auto sub = args[0];
  const auto rest = args.subspan(1);
  if (sub == "build" && rest.empty()) {
    const auto image = find_or_build_image();
    if (image.empty()) {
      std::cerr << "sandgate image build: the build failed (its messages are above)\n";
      return 1;
    }
    std::cout << image << "\n";
    return 0;
  }
  if (sub == "ls" && (rest.empty() || (rest.size() == 1 && rest[0] == "--json"))) return image_ls(!rest.empty());
  if (sub == "rm") {
    const bool force = !rest.empty() && rest[0] == "-f";
    const auto ids = rest.subspan(force ? 1 : 0);
    if (!ids.empty()) return image_rm(ids, force);
  }
  if (sub == "prune" && rest.empty()) {
    const auto images = list_images();
    std::vector<std::string> drop;
    for (std::size_t i = 1; i < images.size(); ++i)
      if (images[i].used_by.empty()) drop.push_back(images[i].id);
    std::vector<std::string_view> ids(drop.begin(), drop.end());
    return image_rm(ids, false);
  }
  std::cerr << "sandgate image: bad arguments (see 'sandgate image --help')\n";
  return 2;
}

}  // namespace sandgate::cli
