// A parsed `glassbox` command line, and the environment it was parsed in.
#pragma once

#include <any>
#include <cstdint>
#include <optional>
#include <string>
#include <typeinfo>

#include "base/check.h"
#include "client/cpp/glassbox_client.h"
#include "client/cpp/intervention_spec.h"

namespace glassbox::cli {

// What the command line falls back on. Kept apart from the process so that tests control it.
struct Environment {
  std::optional<std::string> api_key;  // GLASSBOX_API_KEY
  std::optional<std::string> server;   // GLASSBOX_SERVER
  // Reads the value files of --intervene ...:value=@FILE; empty: LoadValueFile.
  ValueLoader load_value;
};
Environment EnvironmentFromProcess();

inline constexpr char kHelpCommand[] = "help";

// A parsed command line: the command, where and how to connect, the request to send and how to
// show the answer.
struct Invocation {
  // The command's name as the registry spells it ("logit-lens", also for `logit_lens`), or
  // kHelpCommand: print the usage text.
  std::string command = kHelpCommand;
  std::string server;
  client::ClientOptions client;
  // The request as it will be sent: the glassbox.v1 request message of the command's RPC
  // (RunRequest for run, with the interventions; ReleaseCachedRunRequest for release, ...).
  // Read it with Request<T>(invocation).
  std::any request;
  // How the answer is shown, beside the request.
  int32_t position = -1;          // logit-lens, dla: the position shown; negative from the end
  int32_t top = 10;               // dla: components printed per row; job results: records
                                  // per target; 0 = all
  bool print_normalized = false;  // patch: the normalised matrix instead of the raw metric
  std::string out_path;           // where to write the results ("" = nowhere)
  bool json = false;              // job list, job results: the response as JSON
  bool detach = false;            // scan: print the job id and return without watching it
  // Where job progress goes: rewritten in place (stderr is a terminal: Main sets it) or one line
  // per update.
  bool progress_in_place = false;
};

// The invocation's request as the message type its command sends; a different type is a
// programming error.
template <typename Message>
const Message& Request(const Invocation& invocation) {
  const Message* request = std::any_cast<Message>(&invocation.request);
  GB_CHECK(request != nullptr, "the %s command's request is not a %s", invocation.command.c_str(),
           typeid(Message).name());
  return *request;
}

}  // namespace glassbox::cli
