#include "cli/lab_cli.h"

#include <memory>
#include <string>
#include <vector>

#include "lab/daemon.h"
#include "lab/demo.h"
#include "lab/lab.h"

namespace kpx::cli {

namespace {

struct LabArgs {
  lab::LabSpec spec;
  int api_port = 0;
  bool all = false;
  bool keep = false;
  std::string file, target;
  std::vector<std::string> command;
};

}  // namespace

void add_lab_commands(CLI::App& lab_cmd, std::ostream& out, std::ostream& err, int& rc) {
  auto a = std::make_shared<LabArgs>();
  auto done = [&out, &err, &rc](const Status& st) {
    if (st) return;
    err << "kpx: " << st.error().message << "\n";
    rc = st.error().kind == ErrorKind::kInvalidArgument ? 2 : 1;
  };
  auto name_opt = [a](CLI::App* c) {
    c->add_option("--name", a->spec.name, "the lab's name (letters and digits)")->capture_default_str();
  };

  auto* up = lab_cmd.add_subcommand("up", "build a lab: fabric, nodes with kpx agents, pods, API server");
  name_opt(up);
  up->add_option("--nodes", a->spec.nodes, "nodes")->capture_default_str();
  up->add_option("--pods-per-node", a->spec.pods_per_node, "echo pods per node (Service 'echo')")->capture_default_str();
  up->add_option("--api-port", a->api_port, "API server port on 127.0.0.1 (0: any free one)")->capture_default_str();
  up->add_option("--agent-arg", a->spec.agent_args,
                 "a flag for every node's kpx agent, after the lab's own (repeatable; e.g. --agent-arg=--masquerade-all)");
  up->callback([=, &out] { done(lab::lab_up(a->spec, a->api_port, out)); });

  auto* down = lab_cmd.add_subcommand("down", "remove a lab and everything it made (also after a crash)");
  name_opt(down);
  down->add_flag("--all", a->all, "remove every lab on this machine, stale ones included");
  down->callback([=, &out] { done(a->all ? lab::lab_down_all(out) : lab::lab_down(a->spec.name, out)); });

  auto* status = lab_cmd.add_subcommand("status", "nodes, pods, Services and the agents' health");
  name_opt(status);
  status->callback([=, &out] { done(lab::lab_status(a->spec.name, out)); });

  auto* apply = lab_cmd.add_subcommand("apply", "create or update Services and pods from Kubernetes YAML");
  name_opt(apply);
  apply->add_option("-f,--filename", a->file, "YAML file ('-': standard input)")->required();
  apply->callback([=, &out] { done(lab::lab_apply(a->spec.name, a->file, out)); });

  auto* exec = lab_cmd.add_subcommand("exec", "run a command in a pod, a node, the client, the internet or the gateway");
  name_opt(exec);
  exec->add_option("target", a->target, "[NAMESPACE/]POD, nodeN, client, internet or gateway")->required();
  exec->add_option("command", a->command, "-- COMMAND [ARGS...]")->required();
  exec->callback([=] { done(lab::lab_exec(a->spec.name, a->target, a->command)); });

  auto* demo = lab_cmd.add_subcommand("demo", "build a lab, walk every path of Kubernetes networking through it, remove it");
  demo->add_option("--name", a->spec.name, "the lab's name")->default_val("demo");
  demo->add_flag("--keep", a->keep, "leave the lab running afterwards");
  demo->callback([=, &out] { done(lab::lab_demo(a->spec.name, a->keep, out)); });

  auto* daemon = lab_cmd.add_subcommand("daemon", "");  // started by `lab up`; hidden
  daemon->group("");
  name_opt(daemon);
  daemon->add_option("--nodes", a->spec.nodes);
  daemon->add_option("--pods-per-node", a->spec.pods_per_node);
  daemon->add_option("--api-port", a->api_port);
  daemon->add_option("--agent-arg", a->spec.agent_args);
  daemon->callback([=] {
    lab::DaemonOptions o;
    o.name = a->spec.name;
    o.nodes = a->spec.nodes;
    o.pods_per_node = a->spec.pods_per_node;
    o.api_port = a->api_port;
    o.agent_args = a->spec.agent_args;
    o.kpx_binary = lab::self_executable();
    done(lab::run_daemon(o));
  });
}

}  // namespace kpx::cli
