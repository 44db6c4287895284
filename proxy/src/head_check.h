// Checks on the raw request head that HTTP parsers tend to tolerate, and a
// forward proxy must not: each is a known request-smuggling or confusion
// vector. Cost: one pass over the head bytes; no allocation.
#pragma once

#include <string_view>

namespace sandgate::proxy::detail {

// Returns "" when the head is clean, or the reason it is refused: a NUL or
// other control byte, a bare CR or LF, obs-fold (a line that starts with a
// space or tab). head runs up to and including the blank line.
std::string_view check_raw_head(std::string_view head) noexcept;

}  // namespace sandgate::proxy::detail
