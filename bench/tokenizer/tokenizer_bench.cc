// Encode throughput (MB/s of UTF-8 input) of a tokenizer over a text file, one line at a time,
// single-threaded and with N threads sharing one Tokenizer (as the server does).
//   tokenizer_bench TOKENIZER_DIR TEXT_FILE [THREADS] [ROUNDS]
// Prints "glassbox <mode>: <MB/s> MB/s, <tokens> tokens".
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "server/model/tokenizer/tokenizer.h"

namespace {

std::vector<std::string> ReadLines(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot open %s\n", path);
    std::exit(1);
  }
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// Encodes lines[i] for i = first, first + stride, ...; returns the number of tokens.
size_t EncodeLines(const glassbox::Tokenizer& tok, const std::vector<std::string>& lines,
                   size_t first, size_t stride) {
  glassbox::EncodeOptions options;
  options.add_special_tokens = false;
  size_t tokens = 0;
  for (size_t i = first; i < lines.size(); i += stride) {
    auto ids = tok.Encode(lines[i], options);
    if (!ids.ok()) {
      std::fprintf(stderr, "encode failed: %s\n", std::string(ids.status().message()).c_str());
      std::exit(1);
    }
    tokens += ids->size();
  }
  return tokens;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_DIR TEXT_FILE [THREADS] [ROUNDS]\n", argv[0]);
    return 2;
  }
  auto tok = glassbox::Tokenizer::LoadFromDirectory(argv[1]);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tok.status().message()).c_str());
    return 1;
  }
  const std::vector<std::string> lines = ReadLines(argv[2]);
  size_t bytes = 0;
  for (const auto& l : lines) bytes += l.size();
  const int threads =
      argc > 3 ? std::atoi(argv[3]) : static_cast<int>(std::thread::hardware_concurrency());
  const int rounds = argc > 4 ? std::atoi(argv[4]) : 3;
  const double mb = static_cast<double>(bytes) / 1e6;

  // Best of `rounds`, like timeit; the first round also warms the BPE cache as HF's does.
  auto time_it = [&](auto&& fn) {
    double best = 1e30;
    size_t tokens = 0;
    for (int r = 0; r < rounds; ++r) {
      const auto start = std::chrono::steady_clock::now();
      tokens = fn();
      const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
      best = std::min(best, elapsed.count());
    }
    return std::make_pair(best, tokens);
  };

  auto [single_s, single_tokens] = time_it([&] { return EncodeLines(**tok, lines, 0, 1); });
  std::printf("glassbox encode loop (1 thread): %.2f MB/s, %zu tokens, %.2f MB\n", mb / single_s,
              single_tokens, mb);
  auto [multi_s, multi_tokens] = time_it([&] {
    std::atomic<size_t> total{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] { total += EncodeLines(**tok, lines, t, threads); });
    }
    for (auto& th : pool) th.join();
    return total.load();
  });
  std::printf("glassbox encode (%d threads): %.2f MB/s, %zu tokens\n", threads, mb / multi_s,
              multi_tokens);
  return 0;
}
