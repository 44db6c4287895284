// Checks on the raw request head that HTTP parsers tend to tolerate, and a
// forward proxy must not: each is a known request-smuggling or confusion
// vector. Cost: one pass over the head bytes; no allocation.
#pragma once

#include <string>
#include <string_view>

#include "head_arena.h"

namespace sandgate::proxy::detail {

// Returns "" when the head is clean, or the reason it is refused: a NUL or
// other control byte, a bare CR or LF, obs-fold (a line that starts with a
// space or tab). head runs up to and including the blank line.
std::string_view check_raw_head(std::string_view head) noexcept;

// Whether bytes[from..] hold an LF that no CR comes right before (a line
// ended by a bare LF: in a head, or in a chunk's size line).
bool bare_lf(std::string_view bytes, std::size_t from) noexcept;

// Checks the raw bytes, then parses the head into `parser` (which must be
// fresh, its limits set) and refuses request smuggling and header bombs:
// several Content-Length fields, Content-Length with Transfer-Encoding, a
// Transfer-Encoding other than a single "chunked", several Host fields, more
// than max_fields fields, an HTTP version other than 1.0 or 1.1, Transfer-Encoding
// in an HTTP/1.0 request, a CONNECT with content. Returns "" when the head is
// acceptable, else the reason for a 400.
std::string parse_request_head(std::string_view head, std::size_t max_fields, RequestParser& parser);

}  // namespace sandgate::proxy::detail
