// libFuzzer target for the service (issue 24): every request message of glassbox.v1.Glassbox,
// sent to an in-process server over the tiny GPT-2 fixture (no tokenizer), the demo model (a
// tokenizer) and an SAE, with small limits. An input is one byte choosing the RPC and the
// request's wire bytes. Besides byte-level mutations (which exercise the parser), a custom
// mutator parses the request and changes one field through protobuf's reflection (Debian has no
// libprotobuf-mutator): numbers to edge values, strings to model, SAE and hook names, repeated
// fields grown and shrunk, submessages created; and it starts from a good request of each RPC.
//
// Invariants: the server never crashes (ASan/UBSan watch it), and every refusal has a precise
// code: UNKNOWN, INTERNAL or DATA_LOSS for a request is a finding (the service validates every
// field before running, so only a bug answers so). A crash found is minimised
// (-minimize_crash=1) and added to fuzz/seeds/request/, which every run replays first. At exit it
// prints, by RPC, how many requests were sent and how many were served.
//
// GLASSBOX_FUZZ_WRITE_SEEDS=DIR writes the good request of each RPC there and exits (how
// fuzz/seeds/request/ was made).
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "glassbox/v1/glassbox.grpc.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/stubs/logging.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/scheduler/scheduler.h"
#include "server/service/glassbox_service.h"
#include "server/service/model_store.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace glassbox {
namespace {

namespace pb = ::glassbox::v1;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using Rng = std::mt19937;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "request_fuzz: %s\n", what.c_str());
  std::abort();
}

// ---- the server ----

struct Server {
  std::unique_ptr<ModelStore> store;
  Scheduler scheduler;
  std::unique_ptr<ScanJobs> jobs;
  std::unique_ptr<GlassboxService> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<pb::Glassbox::Stub> stub;
};

Server* StartServer() {
  const std::string root = GLASSBOX_SOURCE_DIR;
  auto store = ModelStore::Load(
      {{"gpt2", root + "/tests/fixtures/models/tiny-gpt2"}, {"demo", root + "/models/demo"}},
      std::make_shared<CpuBackend>(), "cpu");
  if (!store.ok()) Fail("cannot load the models: " + store.status().ToString());
  if (absl::Status s =
          (*store)->LoadSaes({{.name = "res1_standard",
                               .path = root + "/tests/fixtures/saes/service/res1_standard",
                               .model = "gpt2"}});
      !s.ok()) {
    Fail("cannot load the SAE: " + s.ToString());
  }
  auto* s = new Server;
  s->store = *std::move(store);
  // Small limits, so that requests near them are cheap and those past them are refused.
  ServiceLimits limits;
  limits.max_batch = 4;
  limits.max_tokens_per_request = 64;
  limits.max_response_bytes = 64 << 10;
  limits.stream_buffer_bytes = 64 << 10;
  limits.cache.max_bytes = 64 << 10;
  limits.cache.max_entries = 4;
  s->service = std::make_unique<GlassboxService>(*s->store, s->scheduler, limits);
  // Scan jobs in memory over a corpus directory of one small file; small limits keep the jobs
  // the fuzzer starts cheap (they run in the background meanwhile).
  const std::filesystem::path corpus =
      std::filesystem::temp_directory_path() / ("request_fuzz_corpus." + std::to_string(getpid()));
  std::filesystem::create_directories(corpus);
  std::ofstream(corpus / "corpus.jsonl")
      << "{\"text\": \"Alice and Bob went to the park. Bob gave a ball to Alice.\"}\n"
         "{\"text\": \"The capital of Norway is Oslo. 15 20 25 30 35 40\"}\n";
  s->jobs = std::make_unique<ScanJobs>(*s->store, s->scheduler,
                                       ScanJobsOptions{.corpus_dir = corpus.string(),
                                                       .max_contexts = 16,
                                                       .max_state_bytes = 8 << 20,
                                                       .max_jobs_per_owner = 4,
                                                       .max_result_targets = 64,
                                                       .replay_bytes = 4 << 20});
  s->service->SetScanJobs(s->jobs.get());
  grpc::ServerBuilder builder;
  builder.RegisterService(s->service.get());
  s->server = builder.BuildAndStart();
  if (s->server == nullptr) Fail("the in-process server did not start");
  s->stub = pb::Glassbox::NewStub(s->server->InProcessChannel(grpc::ChannelArguments()));
  return s;
}

Server& TheServer() {
  static Server* server = StartServer();
  return *server;
}

// ---- the RPCs ----

using Call = std::function<grpc::Status(pb::Glassbox::Stub&, const Message&)>;

void SetDeadline(grpc::ClientContext& context) {
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
}

template <typename Request, typename Response>
Call Unary(grpc::Status (pb::Glassbox::Stub::*method)(grpc::ClientContext*, const Request&,
                                                      Response*)) {
  return [method](pb::Glassbox::Stub& stub, const Message& m) {
    grpc::ClientContext context;
    SetDeadline(context);
    Response response;
    return (stub.*method)(&context, static_cast<const Request&>(m), &response);
  };
}

template <typename Request, typename Response>
Call Streaming(std::unique_ptr<grpc::ClientReader<Response>> (pb::Glassbox::Stub::*method)(
    grpc::ClientContext*, const Request&)) {
  return [method](pb::Glassbox::Stub& stub, const Message& m) {
    grpc::ClientContext context;
    SetDeadline(context);
    auto reader = (stub.*method)(&context, static_cast<const Request&>(m));
    Response response;
    while (reader->Read(&response)) {
    }
    return reader->Finish();
  };
}

// The job a request names by the placeholder id is the last one StartScan started: the fuzzer
// could not guess a job's random id, and WatchJob, CancelJob and GetScanResults should reach a
// real job, running or ended.
constexpr char kPlaceholderJob[] = "scan-000000000000";
std::string& LastJobId() {
  static auto* id = new std::string;
  return *id;
}

Call StartScanCall() {
  return [](pb::Glassbox::Stub& stub, const Message& m) {
    grpc::ClientContext context;
    SetDeadline(context);
    pb::JobInfo job;
    grpc::Status status =
        stub.StartScan(&context, static_cast<const pb::StartScanRequest&>(m), &job);
    if (status.ok()) LastJobId() = job.job_id();
    return status;
  };
}

void NameLastJob(Message& request) {
  const FieldDescriptor* field = request.GetDescriptor()->FindFieldByName("job_id");
  if (field == nullptr || field->is_repeated() || field->type() != FieldDescriptor::TYPE_STRING ||
      LastJobId().empty()) {
    return;
  }
  const Reflection* reflection = request.GetReflection();
  if (reflection->GetString(request, field) == kPlaceholderJob) {
    reflection->SetString(&request, field, LastJobId());
  }
}

void AddRow(pb::Inputs* inputs, std::initializer_list<int32_t> ids) {
  auto* row = inputs->add_token_ids();
  for (int32_t id : ids) row->add_ids(id);
}

struct Rpc {
  const char* name;
  std::function<std::unique_ptr<Message>()> good;  // a request the server serves
  Call call;
};

template <typename Request>
std::unique_ptr<Message> Good(const std::function<void(Request&)>& fill) {
  auto r = std::make_unique<Request>();
  fill(*r);
  return r;
}

const std::vector<Rpc>& Rpcs() {
  using S = pb::Glassbox::Stub;
  static const auto* rpcs = new std::vector<Rpc>{
      {"ListModels", [] { return Good<pb::ListModelsRequest>([](auto&) {}); },
       Unary(&S::ListModels)},
      {"GetModelInfo",
       [] { return Good<pb::GetModelInfoRequest>([](auto& r) { r.set_model("gpt2"); }); },
       Unary(&S::GetModelInfo)},
      {"Tokenize",
       [] {
         return Good<pb::TokenizeRequest>([](auto& r) {
           r.set_model("demo");
           r.set_text("Alice and Bob");
         });
       },
       Unary(&S::Tokenize)},
      {"Detokenize",
       [] {
         return Good<pb::DetokenizeRequest>([](auto& r) {
           r.set_model("demo");
           for (int32_t id : {5, 17, 300}) r.add_ids(id);
         });
       },
       Unary(&S::Detokenize)},
      {"Run",
       [] {
         return Good<pb::RunRequest>([](auto& r) {
           r.set_model("gpt2");
           AddRow(r.mutable_inputs(), {1, 2, 3});
           r.add_captures()->set_hook("blocks.0.hook_resid_post");
           auto* edit = r.add_interventions();
           edit->set_hook("blocks.0.attn.hook_z");
           edit->set_kind(pb::INTERVENTION_ZERO);
         });
       },
       Streaming(&S::Run)},
      {"Generate",
       [] {
         return Good<pb::GenerateRequest>([](auto& r) {
           r.set_model("gpt2");
           AddRow(r.mutable_inputs(), {1, 2, 3});
           r.set_max_new_tokens(2);
         });
       },
       Streaming(&S::Generate)},
      {"ListCachedRuns", [] { return Good<pb::ListCachedRunsRequest>([](auto&) {}); },
       Unary(&S::ListCachedRuns)},
      {"ReleaseCachedRun",
       [] { return Good<pb::ReleaseCachedRunRequest>([](auto& r) { r.set_name("base"); }); },
       Unary(&S::ReleaseCachedRun)},
      {"PatchingSweep",
       [] {
         return Good<pb::PatchingSweepRequest>([](auto& r) {
           r.set_model("gpt2");
           AddRow(r.mutable_clean(), {1, 2, 3});
           AddRow(r.mutable_corrupted(), {4, 5, 6});
           r.set_kind(pb::SWEEP_RESID_PRE);
           r.mutable_metric()->set_token_a(7);
           r.mutable_metric()->set_token_b(8);
         });
       },
       Unary(&S::PatchingSweep)},
      {"LogitLens",
       [] {
         return Good<pb::LogitLensRequest>([](auto& r) {
           r.set_model("gpt2");
           AddRow(r.mutable_inputs(), {1, 2, 3});
           r.set_top_k(3);
         });
       },
       Unary(&S::LogitLens)},
      {"DirectLogitAttribution",
       [] {
         return Good<pb::DirectLogitAttributionRequest>([](auto& r) {
           r.set_model("gpt2");
           AddRow(r.mutable_inputs(), {1, 2, 3});
           r.set_token(5);
         });
       },
       Unary(&S::DirectLogitAttribution)},
      {"AttentionNorms",
       [] {
         return Good<pb::AttentionNormsRequest>([](auto& r) {
           r.set_model("gpt2");
           AddRow(r.mutable_inputs(), {1, 2, 3});
         });
       },
       Unary(&S::AttentionNorms)},
      {"ListSaes", [] { return Good<pb::ListSaesRequest>([](auto& r) { r.set_model("gpt2"); }); },
       Unary(&S::ListSaes)},
      {"SaeEncode",
       [] {
         return Good<pb::SaeEncodeRequest>([](auto& r) {
           r.set_sae("res1_standard");
           AddRow(r.mutable_inputs(), {1, 2, 3});
         });
       },
       Unary(&S::SaeEncode)},
      {"SaeDecode",
       [] {
         return Good<pb::SaeDecodeRequest>([](auto& r) {
           r.set_sae("res1_standard");
           for (int64_t o : {0, 1, 3}) r.add_offsets(o);
           for (int32_t i : {3, 0, 127}) r.add_indices(i);
           for (float v : {1.5f, 0.25f, 2.0f}) r.add_values(v);
         });
       },
       Unary(&S::SaeDecode)},
      // Dataset scans (appended, so that the seeds of the RPCs above keep their index).
      {"StartScan",
       [] {
         return Good<pb::StartScanRequest>([](auto& r) {
           r.set_model("demo");
           r.mutable_corpus()->set_path("corpus.jsonl");
           r.mutable_corpus()->set_max_contexts(4);
           auto* neurons = r.add_targets()->mutable_neurons();
           neurons->set_hook("blocks.1.mlp.hook_post");
           for (int32_t i : {0, 5}) neurons->add_indices(i);
           r.set_context_length(16);
         });
       },
       StartScanCall()},
      {"WatchJob",
       [] { return Good<pb::WatchJobRequest>([](auto& r) { r.set_job_id(kPlaceholderJob); }); },
       Streaming(&S::WatchJob)},
      {"CancelJob",
       [] { return Good<pb::CancelJobRequest>([](auto& r) { r.set_job_id(kPlaceholderJob); }); },
       Unary(&S::CancelJob)},
      {"ListJobs", [] { return Good<pb::ListJobsRequest>([](auto&) {}); }, Unary(&S::ListJobs)},
      {"GetScanResults",
       [] {
         return Good<pb::GetScanResultsRequest>([](auto& r) {
           r.set_job_id(kPlaceholderJob);
           r.set_target_limit(2);
         });
       },
       Unary(&S::GetScanResults)},
      {"ScoreExplanation",
       [] {
         return Good<pb::ScoreExplanationRequest>([](auto& r) {
           r.set_model("demo");
           auto* neurons = r.mutable_target()->mutable_neurons();
           neurons->set_hook("blocks.1.mlp.hook_post");
           neurons->add_indices(3);
           auto* excerpt = r.add_excerpts();
           for (int32_t id : {0, 5, 17, 300}) excerpt->add_tokens(id);
           for (float v : {0.0f, 0.5f, 1.0f, 0.0f}) excerpt->add_simulated(v);
           r.set_ablation(true);
         });
       },
       Unary(&S::ScoreExplanation)},
      {"Gradients",
       [] {
         return Good<pb::GradientsRequest>([](auto& r) {
           r.set_model("demo");
           AddRow(r.mutable_inputs(), {0, 5, 17, 300});
           AddRow(r.mutable_inputs(), {2, 9, 40, 7});
           r.mutable_metric()->set_kind(pb::GradientMetric::LOG_PROB);
           r.mutable_metric()->set_token_a(11);
           r.mutable_metric()->set_position(2);
           r.add_hooks("blocks.*.hook_resid_pre");
           r.add_hooks("blocks.1.attn.hook_pattern");
         });
       },
       Unary(&S::Gradients)},
      {"IntegratedGradients",
       [] {
         return Good<pb::IntegratedGradientsRequest>([](auto& r) {
           r.set_model("demo");
           AddRow(r.mutable_inputs(), {0, 5, 17, 300});
           r.mutable_metric()->set_token_a(11);
           r.mutable_metric()->set_token_b(12);
           r.set_hook("blocks.1.attn.hook_z");
           r.set_steps(3);
           r.mutable_baseline()->add_shape(32);
           for (int i = 0; i < 32; ++i) r.mutable_baseline()->add_values(0.25f);
         });
       },
       Unary(&S::IntegratedGradients)},
      {"Jacobian",
       [] {
         return Good<pb::JacobianRequest>([](auto& r) {
           r.set_model("demo");
           AddRow(r.mutable_inputs(), {0, 5, 17, 300});
           AddRow(r.mutable_inputs(), {0, 9, 40, 7});
           r.set_in_hook("blocks.2.ln1.hook_scale");  // [128, 1] per row: a small response
           r.add_in_positions(1);
           r.add_in_positions(-1);
           r.set_out_hook("blocks.2.hook_resid_mid");
           r.add_out_positions(-1);
         });
       },
       Unary(&S::Jacobian)},
      // Gradients of an activation, through edits (appended: the seeds above keep their index).
      {"GradientsOfADirectionThroughEdits",
       [] {
         return Good<pb::GradientsRequest>([](auto& r) {
           r.set_model("demo");
           AddRow(r.mutable_inputs(), {0, 5, 17, 300});
           AddRow(r.mutable_inputs(), {2, 9, 40});
           r.mutable_metric()->set_kind(pb::GradientMetric::DIRECTION);
           r.mutable_metric()->set_hook("blocks.1.attn.hook_z");
           for (int i = 0; i < 128; ++i) r.mutable_metric()->add_direction(i % 3 - 1.0f);
           r.add_hooks("hook_embed");
           auto* zero = r.add_interventions();
           zero->set_hook("blocks.0.attn.hook_z");
           zero->set_kind(pb::INTERVENTION_ZERO);
           zero->add_heads(1);
           auto* mean = r.add_interventions();
           mean->set_hook("blocks.0.hook_resid_mid");
           mean->set_kind(pb::INTERVENTION_MEAN_POS);
           mean->add_positions(-1);
         });
       },
       Unary(&S::Gradients)},
      // Gradients at an SAE splice's points, through its feature edits.
      {"GradientsAtSaePoints",
       [] {
         return Good<pb::GradientsRequest>([](auto& r) {
           r.set_model("gpt2");
           AddRow(r.mutable_inputs(), {1, 2, 3, 4});
           AddRow(r.mutable_inputs(), {5, 6});
           r.mutable_metric()->set_token_a(5);
           r.mutable_metric()->set_token_b(6);
           r.add_hooks("blocks.1.hook_resid_pre.hook_sae_*");
           r.add_hooks("hook_embed");
           auto* splice = r.add_sae_splices();
           splice->set_sae("res1_standard");
           splice->set_use_error_term(true);
           auto* edit = splice->add_edits();
           edit->set_kind(pb::FEATURE_EDIT_SCALE);
           edit->add_features(3);
           edit->set_value(2.0f);
         });
       },
       Unary(&S::Gradients)},
  };
  return *rpcs;
}

// ---- the structured mutator ----

template <typename T>
T Pick(Rng& rng, const std::vector<T>& values) {
  return values[std::uniform_int_distribution<size_t>(0, values.size() - 1)(rng)];
}

int64_t EdgeInteger(Rng& rng) {
  static const std::vector<int64_t> kEdges = {0,
                                              1,
                                              -1,
                                              2,
                                              3,
                                              4,
                                              5,
                                              7,
                                              8,
                                              16,
                                              63,
                                              64,
                                              65,
                                              127,
                                              128,
                                              255,
                                              256,
                                              299,
                                              300,
                                              301,
                                              1023,
                                              1024,
                                              65536,
                                              1 << 20,
                                              std::numeric_limits<int32_t>::max(),
                                              std::numeric_limits<int32_t>::min(),
                                              std::numeric_limits<int64_t>::max(),
                                              std::numeric_limits<int64_t>::min()};
  if (rng() % 4 == 0) return std::uniform_int_distribution<int64_t>(-8, 40)(rng);
  return Pick(rng, kEdges);
}

double EdgeFloat(Rng& rng) {
  static const std::vector<double> kEdges = {0.0,
                                             -0.0,
                                             1.0,
                                             -1.0,
                                             0.5,
                                             2.0,
                                             1e-30,
                                             1e30,
                                             -1e30,
                                             3.4e38,
                                             std::numeric_limits<double>::quiet_NaN(),
                                             std::numeric_limits<double>::infinity(),
                                             -std::numeric_limits<double>::infinity(),
                                             std::numeric_limits<float>::denorm_min()};
  if (rng() % 3 == 0) return std::normal_distribution<double>(0, 10)(rng);
  return Pick(rng, kEdges);
}

std::string EdgeString(Rng& rng, const std::string& current) {
  static const std::vector<std::string> kWords = {"",
                                                  "gpt2",
                                                  "demo",
                                                  "nope",
                                                  "GPT2",
                                                  "res1_standard",
                                                  "base",
                                                  "kept",
                                                  "*",
                                                  "?",
                                                  "hook_embed",
                                                  "hook_pos_embed",
                                                  "blocks.0.hook_resid_pre",
                                                  "blocks.1.hook_resid_post",
                                                  "blocks.*.hook_resid_post",
                                                  "blocks.0.hook_resid_mid",
                                                  "blocks.0.attn.hook_pattern",
                                                  "blocks.0.attn.hook_attn_scores",
                                                  "blocks.1.attn.hook_z",
                                                  "blocks.0.attn.hook_q",
                                                  "blocks.0.attn.hook_result",
                                                  "blocks.0.mlp.hook_pre",
                                                  "blocks.1.mlp.hook_post",
                                                  "blocks.0.ln1.hook_normalized",
                                                  "ln_final.hook_normalized",
                                                  "ln_final.hook_scale",
                                                  "blocks.1.hook_resid_pre.hook_sae_acts_post",
                                                  "blocks.1.hook_resid_pre.hook_sae_error",
                                                  "blocks.9.hook_resid_pre",
                                                  "blocks.-1.hook_resid_pre",
                                                  "blocks.01.hook_resid_pre",
                                                  "logits",
                                                  "loss",
                                                  "Alice and Bob",
                                                  "caf\xc3\xa9",
                                                  std::string("a\0b", 3),
                                                  "../../etc/passwd",
                                                  std::string(300, 'x'),
                                                  "\xe2\x80\x8b zero-width",
                                                  "the cat sat on the",
                                                  "corpus.jsonl",
                                                  "scan-000000000000",
                                                  "res1_standard"};
  switch (rng() % 4) {
    case 0:
      if (!current.empty()) {  // change one character (to ASCII: proto3 strings must be UTF-8,
                               // and gRPC refuses a request that is not before the service)
        std::string s = current;
        s[rng() % s.size()] = static_cast<char>(32 + rng() % 95);
        return s;
      }
      [[fallthrough]];
    default:
      return Pick(rng, kWords);
  }
}

void MutateScalar(Message* m, const FieldDescriptor* f, int index, Rng& rng) {
  const Reflection* r = m->GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      const auto v = static_cast<int32_t>(EdgeInteger(rng));
      rep ? r->SetRepeatedInt32(m, f, index, v) : r->SetInt32(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      const int64_t v = EdgeInteger(rng);
      rep ? r->SetRepeatedInt64(m, f, index, v) : r->SetInt64(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      const auto v = static_cast<uint32_t>(EdgeInteger(rng));
      rep ? r->SetRepeatedUInt32(m, f, index, v) : r->SetUInt32(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      const auto v = static_cast<uint64_t>(EdgeInteger(rng));
      rep ? r->SetRepeatedUInt64(m, f, index, v) : r->SetUInt64(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_FLOAT: {
      const auto v = static_cast<float>(EdgeFloat(rng));
      rep ? r->SetRepeatedFloat(m, f, index, v) : r->SetFloat(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_DOUBLE: {
      const double v = EdgeFloat(rng);
      rep ? r->SetRepeatedDouble(m, f, index, v) : r->SetDouble(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      const bool v = rng() % 2 == 0;
      rep ? r->SetRepeatedBool(m, f, index, v) : r->SetBool(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      // A declared value mostly; sometimes one the proto does not declare (open enums keep it).
      const auto* e = f->enum_type();
      const int v = rng() % 5 == 0 ? static_cast<int>(EdgeInteger(rng) % 1000)
                                   : e->value(static_cast<int>(rng() % e->value_count()))->number();
      rep ? r->SetRepeatedEnumValue(m, f, index, v) : r->SetEnumValue(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      const std::string current = rep ? r->GetRepeatedString(*m, f, index) : r->GetString(*m, f);
      std::string v;
      if (f->type() == FieldDescriptor::TYPE_BYTES) {
        v.resize(Pick<size_t>(rng, {0, 1, 3, 4, 17, 1024}));
        for (char& c : v) c = static_cast<char>(rng());
      } else {
        v = EdgeString(rng, current);
      }
      rep ? r->SetRepeatedString(m, f, index, v) : r->SetString(m, f, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;  // handled by the caller
  }
}

void MutateMessage(Message* m, Rng& rng, int depth);

// Appends one element to a repeated field, a copy of an existing one or a fresh value.
void AddElement(Message* m, const FieldDescriptor* f, Rng& rng, int depth) {
  const Reflection* r = m->GetReflection();
  const int size = r->FieldSize(*m, f);
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    Message* added = r->AddMessage(m, f);
    if (size > 0 && rng() % 2 == 0) {
      added->CopyFrom(r->GetRepeatedMessage(*m, f, static_cast<int>(rng() % size)));
    }
    MutateMessage(added, rng, depth + 1);
    return;
  }
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      r->AddInt32(m, f, 0);
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      r->AddInt64(m, f, 0);
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      r->AddUInt32(m, f, 0);
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      r->AddUInt64(m, f, 0);
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      r->AddFloat(m, f, 0);
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      r->AddDouble(m, f, 0);
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      r->AddBool(m, f, false);
      break;
    case FieldDescriptor::CPPTYPE_ENUM:
      r->AddEnumValue(m, f, 0);
      break;
    case FieldDescriptor::CPPTYPE_STRING:
      r->AddString(m, f, "");
      break;
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  MutateScalar(m, f, size, rng);
}

// One change to one field of `m`, chosen among all its fields (set or not).
void MutateMessage(Message* m, Rng& rng, int depth) {
  const auto* d = m->GetDescriptor();
  if (d->field_count() == 0) return;
  const FieldDescriptor* f = d->field(static_cast<int>(rng() % d->field_count()));
  const Reflection* r = m->GetReflection();
  const bool message = f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
  if (!f->is_repeated()) {
    if (rng() % 8 == 0) {
      r->ClearField(m, f);
    } else if (message) {
      if (depth < 6) MutateMessage(r->MutableMessage(m, f), rng, depth + 1);
    } else {
      MutateScalar(m, f, 0, rng);
    }
    return;
  }
  const int size = r->FieldSize(*m, f);
  switch (size == 0 ? 0 : rng() % 5) {
    case 0:  // grow, sometimes by many (row, batch and list limits)
      for (int n = rng() % 6 == 0 ? 1 + static_cast<int>(rng() % 80) : 1; n > 0; --n) {
        AddElement(m, f, rng, depth);
      }
      break;
    case 1:
      r->RemoveLast(m, f);
      break;
    case 2:
      r->SwapElements(m, f, static_cast<int>(rng() % size), static_cast<int>(rng() % size));
      break;
    default: {
      const int i = static_cast<int>(rng() % size);
      if (message) {
        if (depth < 6) MutateMessage(r->MutableRepeatedMessage(m, f, i), rng, depth + 1);
      } else {
        MutateScalar(m, f, i, rng);
      }
    }
  }
}

// An input: the RPC's index, then its request's wire bytes.
size_t Write(int rpc, const Message& request, uint8_t* data, size_t max_size) {
  const std::string bytes = request.SerializeAsString();
  if (bytes.size() + 1 > max_size) return 0;
  data[0] = static_cast<uint8_t>(rpc);
  std::memcpy(data + 1, bytes.data(), bytes.size());
  return bytes.size() + 1;
}

size_t Mutate(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  Rng rng(seed);
  const auto& rpcs = Rpcs();
  if (size == 0 || rng() % 64 == 0) {  // start over from a good request
    const int rpc = static_cast<int>(rng() % rpcs.size());
    const size_t n = Write(rpc, *rpcs[rpc].good(), data, max_size);
    return n > 0 ? n : size;
  }
  if (rng() % 5 == 0) {  // bytes, for the parser
    return 1 + LLVMFuzzerMutate(data + 1, size - 1, max_size - 1);
  }
  int rpc = data[0] % rpcs.size();
  std::unique_ptr<Message> request = rpcs[rpc].good();
  if (!request->ParseFromArray(data + 1, static_cast<int>(size - 1))) {
    request = rpcs[rpc].good();
  }
  if (rng() % 32 == 0) {  // the same bytes as another RPC's request
    rpc = static_cast<int>(rng() % rpcs.size());
    std::unique_ptr<Message> other = rpcs[rpc].good();
    other->ParseFromString(request->SerializeAsString());
    request = std::move(other);
  }
  for (int changes = 1 + static_cast<int>(rng() % 3); changes > 0; --changes) {
    MutateMessage(request.get(), rng, 0);
  }
  const size_t n = Write(rpc, *request, data, max_size);
  return n > 0 ? n : size;
}

void WriteSeeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const auto& rpcs = Rpcs();
  for (size_t i = 0; i < rpcs.size(); ++i) {
    std::vector<uint8_t> buffer(1 << 16);
    const size_t n = Write(static_cast<int>(i), *rpcs[i].good(), buffer.data(), buffer.size());
    std::ofstream(std::filesystem::path(dir) / rpcs[i].name, std::ios::binary)
        .write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(n));
  }
}

// ---- background jobs and exit ----

// A scan job runs on the scheduler's worker after StartScan has answered. When libFuzzer exits,
// the static destructors free oneDNN's JIT kernels, and a batch still running would jump into
// freed code, so every job must end before an exit. Fuzzing for -max_total_time, the harness stops
// starting jobs and waits for them a few seconds before the end (until then jobs overlap the
// requests that follow, as in a server); otherwise (replaying files, -runs) after each input.
struct ExitPlan {
  std::optional<std::chrono::steady_clock::time_point> quiet_from;  // with -max_total_time
  bool quiet = false;                                               // jobs ended, none started
};
ExitPlan& TheExitPlan() {
  static auto* plan = new ExitPlan;
  return *plan;
}

void PlanExit(int argc, char** argv) {
  constexpr std::string_view kFlag = "-max_total_time=";
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (!arg.starts_with(kFlag)) continue;
    const int seconds = std::atoi(arg.substr(kFlag.size()).data());
    if (seconds <= 0) continue;
    TheExitPlan().quiet_from =
        std::chrono::steady_clock::now() + std::chrono::seconds(seconds - std::min(5, seconds / 4));
  }
}

void WaitForJobs() {
  pb::Glassbox::Stub& stub = *TheServer().stub;
  for (int tries = 0; tries < 6000; ++tries) {
    grpc::ClientContext context;
    SetDeadline(context);
    pb::ListJobsResponse response;
    if (grpc::Status s = stub.ListJobs(&context, pb::ListJobsRequest(), &response); !s.ok()) {
      Fail("ListJobs failed while waiting for the jobs: " + s.error_message());
    }
    bool active = false;
    for (const pb::JobInfo& job : response.jobs()) {
      active |= job.state() == pb::JOB_QUEUED || job.state() == pb::JOB_RUNNING;
    }
    if (!active) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Fail("scan jobs were still running 60 s after the last was started");
}

// Requests that reached each RPC, and how many it served: a fuzzer whose inputs are all refused
// at the first check would test little, so the run says how deep it got.
struct Tally {
  int64_t sent = 0, served = 0;
};
std::vector<Tally>& Tallies() {
  static auto* tallies = new std::vector<Tally>(Rpcs().size());
  return *tallies;
}

void PrintTally() {
  std::string line = "request_fuzz: served/sent by RPC:";
  for (size_t i = 0; i < Rpcs().size(); ++i) {
    line += " " + std::string(Rpcs()[i].name) + " " + std::to_string(Tallies()[i].served) + "/" +
            std::to_string(Tallies()[i].sent);
  }
  std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace
}  // namespace glassbox

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  if (const char* dir = std::getenv("GLASSBOX_FUZZ_WRITE_SEEDS")) {
    glassbox::WriteSeeds(dir);
    std::exit(0);
  }
  // Byte-mutated strings that are not UTF-8 fail to parse (as they would in gRPC), and protobuf
  // logs each one; the fuzzer's own output is what matters.
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  glassbox::TheServer();
  glassbox::PlanExit(*argc, *argv);
  std::atexit(glassbox::PrintTally);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  return glassbox::Mutate(data, size, max_size, seed);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& rpcs = glassbox::Rpcs();
  const size_t index = data[0] % rpcs.size();
  const auto& rpc = rpcs[index];
  glassbox::ExitPlan& exit_plan = glassbox::TheExitPlan();
  if (exit_plan.quiet_from && std::chrono::steady_clock::now() >= *exit_plan.quiet_from &&
      !exit_plan.quiet) {
    glassbox::WaitForJobs();
    exit_plan.quiet = true;
  }
  if (exit_plan.quiet && std::string_view(rpc.name) == "StartScan") return 0;
  std::unique_ptr<google::protobuf::Message> request = rpc.good();
  request->Clear();
  // Bytes that are not a message of this type never reach the server (gRPC would refuse them
  // before the service); the parser itself is fuzzed here.
  if (!request->ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  glassbox::NameLastJob(*request);
  const grpc::Status status = rpc.call(*glassbox::TheServer().stub, *request);
  glassbox::Tally& tally = glassbox::Tallies()[index];
  ++tally.sent;
  if (status.ok()) ++tally.served;
  if (!exit_plan.quiet_from) glassbox::WaitForJobs();
  switch (status.error_code()) {
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::DATA_LOSS:
      glassbox::Fail(std::string(rpc.name) + " answered " + std::to_string(status.error_code()) +
                     " (" + status.error_message() + ") to:\n" + request->DebugString());
    default:
      return 0;
  }
}
