// `kpx lab up|down|status|apply|exec|demo` (and the hidden `lab daemon`),
// added to the `lab` subcommand that also holds echo-server and probe.
#pragma once

#include <CLI/CLI.hpp>
#include <ostream>

namespace kpx::cli {

void add_lab_commands(CLI::App& lab_cmd, std::ostream& out, std::ostream& err, int& rc);

}  // namespace kpx::cli
