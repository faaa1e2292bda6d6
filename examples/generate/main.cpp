// Greedy generation with a key/value cache from tsexport's cached artifacts (cache_split.py), in libtorch alone.
//
//   generate BUNDLE_DIR MAX_NEW_TOKENS ID...
//
// Reads the interface ("tsexport/generation.json", embedded in step.pt; BUNDLE_DIR/generation.json otherwise),
// runs prefill.pt + step.pt (decoder-only) or encoder.pt + step.pt (encoder-decoder) on one prompt, and prints one
// line: the generated ids, space-separated (after the prompt, or after the decoder start token), a final eos
// included when one was generated.
#include <torch/script.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

using nlohmann::json;

namespace {

std::vector<int64_t> token_ids(const json& value) {
  std::vector<int64_t> out;
  if (value.is_null()) return out;
  if (value.is_number_integer()) {
    out.push_back(value.get<int64_t>());
    return out;
  }
  for (const auto& v : value) out.push_back(v.get<int64_t>());
  return out;
}

json read_interface(const std::string& dir) {
  torch::jit::ExtraFilesMap extra{{"tsexport/generation.json", ""}};
  torch::jit::load(dir + "/step.pt", torch::kCPU, extra);
  std::string text = extra["tsexport/generation.json"];
  if (text.empty()) {
    std::ifstream in(dir + "/generation.json");
    std::stringstream buffer;
    buffer << in.rdbuf();
    text = buffer.str();
  }
  return json::parse(text);
}

// generate()'s greedy logits processors, as the interface's logits_rules describe them (batch 1).
struct Rules {
  json spec;
  int64_t prompt_length;
  int64_t max_total;
  int64_t begin_index;

  Rules(const json& s, int64_t prompt, int64_t max_new)
      : spec(s), prompt_length(prompt), max_total(prompt + max_new) {
    bool forced_bos = !spec["forced_bos_token_id"].is_null();
    begin_index = prompt_length + ((prompt_length == 1 && forced_bos) ? 1 : 0);
  }

  int64_t pick(torch::Tensor logits, int64_t cur_len) const {
    logits = logits.reshape({-1}).clone();
    const float low = -std::numeric_limits<float>::infinity();
    auto ban = [&](const std::vector<int64_t>& ids) {
      for (int64_t id : ids) logits[id] = low;
    };
    auto force = [&](const std::vector<int64_t>& ids) {
      logits.fill_(low);
      for (int64_t id : ids) logits[id] = 0;
    };
    std::vector<int64_t> eos = token_ids(spec["eos_token_ids"]);
    if (cur_len < spec["min_length"].get<int64_t>() ||
        cur_len - prompt_length < spec["min_new_tokens"].get<int64_t>())
      ban(eos);
    if (!spec["forced_bos_token_id"].is_null() && cur_len == 1) force(token_ids(spec["forced_bos_token_id"]));
    if (!spec["forced_eos_token_id"].is_null() && cur_len == max_total - 1)
      force(token_ids(spec["forced_eos_token_id"]));
    ban(token_ids(spec["suppress_token_ids"]));
    if (cur_len == begin_index) ban(token_ids(spec["begin_suppress_token_ids"]));
    return logits.argmax().item<int64_t>();
  }
};

bool is_eos(const json& spec, int64_t token) {
  for (int64_t id : token_ids(spec["eos_token_ids"]))
    if (id == token) return true;
  return false;
}

torch::Tensor slot(int64_t index) { return torch::tensor({index}, torch::kLong); }

std::vector<int64_t> decoder_only(const std::string& dir, const json& spec, const std::vector<int64_t>& prompt,
                                  int64_t max_new) {
  const int64_t max_length = spec["max_length"].get<int64_t>();
  const int64_t length = static_cast<int64_t>(prompt.size());
  if (length + max_new - 1 > max_length) throw std::runtime_error("prompt + new tokens exceed max_length");
  auto prefill = torch::jit::load(dir + "/" + spec["artifacts"]["prefill"]["file"].get<std::string>());
  auto step = torch::jit::load(dir + "/" + spec["artifacts"]["step"]["file"].get<std::string>());
  prefill.eval();
  step.eval();
  torch::Tensor ids = torch::tensor(prompt, torch::kLong).reshape({1, length});
  torch::Tensor mask = torch::zeros({1, max_length}, torch::kLong);
  mask.slice(1, 0, length).fill_(1);
  auto out = prefill.forward({ids, mask.slice(1, 0, length)}).toTuple();
  torch::Tensor logits = out->elements()[0].toTensor();
  torch::Tensor keys = out->elements()[1].toTensor();
  torch::Tensor values = out->elements()[2].toTensor();
  Rules rules(spec, length, max_new);
  std::vector<int64_t> emitted;
  for (int64_t i = 0; i < max_new; ++i) {
    int64_t token = rules.pick(logits, length + i);
    emitted.push_back(token);
    if (is_eos(spec, token) || i == max_new - 1) break;
    int64_t at = length + i;
    mask.index_put_({0, at}, 1);
    torch::Tensor input = torch::tensor({token}, torch::kLong).reshape({1, 1});
    torch::Tensor position = torch::tensor({length + i}, torch::kLong).reshape({1, 1});
    auto next = step.forward({input, position, slot(at), mask, keys, values}).toTuple();
    logits = next->elements()[0].toTensor();
    keys = next->elements()[1].toTensor();
    values = next->elements()[2].toTensor();
  }
  return emitted;
}

std::vector<int64_t> encoder_decoder(const std::string& dir, const json& spec, const std::vector<int64_t>& prompt,
                                     int64_t max_new) {
  const int64_t max_length = spec["max_length"].get<int64_t>();
  if (max_new > max_length) throw std::runtime_error("new tokens exceed max_length");
  auto encoder = torch::jit::load(dir + "/" + spec["artifacts"]["encoder"]["file"].get<std::string>());
  auto step = torch::jit::load(dir + "/" + spec["artifacts"]["step"]["file"].get<std::string>());
  encoder.eval();
  step.eval();
  const int64_t source = static_cast<int64_t>(prompt.size());
  torch::Tensor ids = torch::tensor(prompt, torch::kLong).reshape({1, source});
  torch::Tensor source_mask = torch::ones({1, source}, torch::kLong);
  auto enc = encoder.forward({ids, source_mask}).toTuple();
  torch::Tensor hidden = enc->elements()[0].toTensor();
  torch::Tensor cross_keys = enc->elements()[1].toTensor();
  torch::Tensor cross_values = enc->elements()[2].toTensor();
  std::vector<int64_t> shape{spec["layers"].get<int64_t>(), 1, spec["heads"].get<int64_t>(), max_length,
                             spec["head_dim"].get<int64_t>()};
  torch::Tensor keys = torch::zeros(shape, hidden.options());
  torch::Tensor values = torch::zeros(shape, hidden.options());
  torch::Tensor mask = torch::zeros({1, max_length}, torch::kLong);
  int64_t token = spec["decoder_start_token_id"].get<int64_t>();
  Rules rules(spec, 1, max_new);
  std::vector<int64_t> emitted;
  for (int64_t t = 0; t < max_new; ++t) {
    mask.index_put_({0, t}, 1);
    torch::Tensor input = torch::tensor({token}, torch::kLong).reshape({1, 1});
    auto next = step.forward({input, slot(t), mask, keys, values, cross_keys, cross_values, hidden, source_mask})
                    .toTuple();
    keys = next->elements()[1].toTensor();
    values = next->elements()[2].toTensor();
    token = rules.pick(next->elements()[0].toTensor(), 1 + t);
    emitted.push_back(token);
    if (is_eos(spec, token)) break;
  }
  return emitted;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: " << argv[0] << " BUNDLE_DIR MAX_NEW_TOKENS ID..." << std::endl;
    return 2;
  }
  try {
    torch::NoGradGuard no_grad;
    const std::string dir = argv[1];
    const int64_t max_new = std::stoll(argv[2]);
    std::vector<int64_t> prompt;
    for (int i = 3; i < argc; ++i) prompt.push_back(std::stoll(argv[i]));
    json spec = read_interface(dir);
    const std::string kind = spec["kind"].get<std::string>();
    std::vector<int64_t> tokens;
    if (kind == "decoder-only") {
      tokens = decoder_only(dir, spec, prompt, max_new);
    } else if (kind == "encoder-decoder") {
      tokens = encoder_decoder(dir, spec, prompt, max_new);
    } else {
      std::cerr << "unknown kind " << kind << std::endl;
      return 2;
    }
    for (size_t i = 0; i < tokens.size(); ++i) std::cout << (i ? " " : "") << tokens[i];
    std::cout << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "generate: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
