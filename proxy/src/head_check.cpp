#include "head_check.h"

namespace sandgate::proxy::detail {

std::string_view check_raw_head(std::string_view head) noexcept {
  bool line_start = true;
  for (std::size_t i = 0; i < head.size(); ++i) {
    const auto c = static_cast<unsigned char>(head[i]);
    if (c == '\r') {
      if (i + 1 >= head.size() || head[i + 1] != '\n') return "a bare CR in the request head";
      ++i;
      line_start = true;
      continue;
    }
    if (c == '\n') return "a bare LF in the request head (lines end in CRLF)";
    if (line_start && (c == ' ' || c == '\t') && i > 0) return "obs-fold (a header line continued on the next line)";
    line_start = false;
    if (c == 0) return "a NUL byte in the request head";
    if ((c < 0x20 && c != '\t') || c == 0x7f) return "a control byte in the request head";
  }
  return "";
}

}  // namespace sandgate::proxy::detail
