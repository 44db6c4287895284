// What the proxy process gives up once its listeners are bound: no new
// privileges (no set-uid gains through exec), and a seccomp filter that
// refuses the system calls a forward proxy never makes (exec, fork, ptrace,
// mount and namespaces, module loading, changing identity, ...). A proxy
// that is taken over can then do little more than the proxy does.
#pragma once

#include <string>

namespace sandgate::proxy {

// Applies both to the whole process (every thread, present and future).
// Returns "" on success, else why not (the caller decides whether that is fatal).
std::string restrict_process();

}  // namespace sandgate::proxy
