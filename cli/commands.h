// Subcommands of the sandgate executable. Each takes the arguments after its
// own name and returns the process exit status.
#pragma once

#include <span>
#include <string_view>

namespace sandgate::cli {

int policy_command(std::span<const std::string_view> args);
int proxy_command(std::span<const std::string_view> args);
int network_command(std::span<const std::string_view> args);
int run_command(std::span<const std::string_view> args);
int ls_command(std::span<const std::string_view> args);
int exec_command(std::span<const std::string_view> args);
int stop_command(std::span<const std::string_view> args);
int rm_command(std::span<const std::string_view> args);
int env_command(std::span<const std::string_view> args);
int image_command(std::span<const std::string_view> args);

}  // namespace sandgate::cli
