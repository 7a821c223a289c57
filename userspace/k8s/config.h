// Where the API server is and how to authenticate to it: a kubeconfig
// (--kubeconfig, else $KUBECONFIG, else ~/.kube/config) or, inside a pod,
// the service account kubelet mounts.
//
// Of a colon-separated $KUBECONFIG only the first non-empty path is read
// (kubectl merges them all; kpx needs a single context).
#pragma once

#include <string>

#include "status/status.h"

namespace kpx::k8s {

inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

struct ClientConfig {
  std::string server;  // "https://host:port" or "http://host:port"
  // The cluster's CA (PEM): a file or the data itself. Neither: the
  // system's trust store.
  std::string ca_file;
  std::string ca_data;
  // Bearer token: a fixed one, or a file re-read as it rotates. A fixed
  // token wins when both are set (as in client-go).
  std::string token;
  std::string token_file;
  // Client certificate and key (PEM), files or data.
  std::string client_cert_file;
  std::string client_cert_data;
  std::string client_key_file;
  std::string client_key_data;
  bool insecure_skip_tls_verify = false;
  // For logs: "kubeconfig /root/.kube/config, context kind-kind" or "in-cluster".
  std::string source;
};

// The inputs of load_client_config(), so that tests need not touch the
// process's environment or the real service account directory.
struct ConfigEnvironment {
  std::string kubeconfig_flag;  // --kubeconfig
  std::string kubeconfig_env;   // $KUBECONFIG
  std::string home;             // $HOME
  std::string service_host;     // $KUBERNETES_SERVICE_HOST
  std::string service_port;     // $KUBERNETES_SERVICE_PORT
  std::string service_account_dir = kServiceAccountDir;

  // The process's environment, and the flag.
  static ConfigEnvironment from_process(const std::string& kubeconfig_flag);
};

// --kubeconfig, else $KUBECONFIG, else ~/.kube/config if it exists, else the
// in-cluster configuration. Errors name the file and what is missing in it.
Result<ClientConfig> load_client_config(const std::string& kubeconfig_flag);
Result<ClientConfig> load_client_config(const ConfigEnvironment& env);

// One kubeconfig file, at its current-context. Relative file paths in it
// are resolved against the file's directory; -data fields are base64.
Result<ClientConfig> load_kubeconfig(const std::string& path);

// https://host:port with the token and ca.crt of service_account_dir.
Result<ClientConfig> in_cluster_config(const std::string& host, const std::string& port,
                                       const std::string& service_account_dir = kServiceAccountDir);

// Standard base64 (whitespace ignored, padding optional), as the -data
// fields are; nullopt-like error on anything else.
Result<std::string> decode_base64(const std::string& text);

}  // namespace kpx::k8s
