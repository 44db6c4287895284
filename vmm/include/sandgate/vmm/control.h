// A detached sandbox's control socket: `sandgate exec` and `stop` connect
// to it and speak the agent protocol; the supervisor relays their frames to
// the one agent channel, giving each client session its own agent session.
#pragma once

#include <functional>
#include <string>

#include <boost/system/result.hpp>

namespace sandgate::vmm {

enum class ControlEnd { stop_requested, vm_exited, agent_lost };

// Creates the listening unix socket (mode 0600: only the owner may run commands in the sandbox).
boost::system::result<int, std::string> listen_control(const std::string& path);

// Relays until a client sends FrameType::stop, vm_alive() turns false, or the
// agent channel closes. A client that disconnects has its running commands
// killed (SIGKILL to their process groups).
ControlEnd serve_control(int listen_fd, int agent_fd, const std::function<bool()>& vm_alive);

}  // namespace sandgate::vmm
