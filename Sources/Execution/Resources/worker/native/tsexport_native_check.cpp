// tsexport verify --native: checks a bundle's artifacts with libtorch alone (no Python in this process).
//
// usage: tsexport_native_check BUNDLE ATOL RTOL [--inputs NAME,NAME...] [--no-aoti]
//
// Reads BUNDLE/sample_inputs.safetensors and BUNDLE/reference_outputs.safetensors (parsed here: an 8-byte
// little-endian header length, a JSON header, raw data), loads BUNDLE/model.pt with torch::jit::load, the split
// artifacts the sample metadata lists (tsexport.artifacts), and BUNDLE/model.pt2 when present with
// torch::inductor::AOTIModelPackageLoader, runs every case (metadata tsexport.cases, input order from --inputs, else
// tsexport.inputs) and compares each output element: passed when |a - e| <= ATOL + RTOL * |e| (equal values, NaN
// and NaN included, pass; NaN on one side is an infinite error) — the rule of the worker's verify_bundle.
//
// prints one JSON line per case: {"artifact", "case", "shape", "passed", "max_abs_error", "max_rel_error"[, "error"]}
// (an error that is not finite is null),
// one {"artifact", "load_error"} line for an artifact that cannot be loaded, and last a summary line
// {"summary": true, "passed", "cases", "failed", "artifacts": [...], "torch": "..."}.
// exit status: 0 when every case of every artifact passed, 1 when one failed, 2 when the bundle cannot be read.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <utility>
#include <vector>

#include "tsexport_safetensors.hpp"

// ---------------------------------------------------------------------------------------------------------------
// cases and comparison

struct Case {
  std::string name;
  Json shape;  // as recorded
  std::string error;  // the eager model's own failure at export: no reference outputs
};

struct Result {
  bool passed = false;
  bool measured = false;
  double max_abs = 0, max_rel = 0;
  std::string error;
  // The least cosine per output row (one example of the batch) to the reference, and to the float32 eager model's
  // outputs where the bundle has them (reduced precision); NaN when no output is floating point.
  double min_cosine = std::numeric_limits<double>::quiet_NaN();
  bool has_float32 = false;
  double float32_min_cosine = std::numeric_limits<double>::quiet_NaN();
  double float32_max_abs = 0;
};

// The least per-row cosine of two same-shaped outputs (rows: dimension 0 when there are two or more dimensions); NaN
// for non-float outputs. Two zero rows are equal (1), one zero row is 0.
static double row_cosine(const at::Tensor& actual, const at::Tensor& expected) {
  if (!actual.is_floating_point() || !expected.is_floating_point()) return std::numeric_limits<double>::quiet_NaN();
  if (actual.numel() == 0) return 1.0;
  int64_t rows = actual.dim() > 1 ? actual.size(0) : 1;
  auto a = actual.detach().to(torch::kCPU).to(torch::kDouble).contiguous().reshape({rows, -1});
  auto e = expected.detach().to(torch::kDouble).contiguous().reshape({rows, -1});
  double least = 1.0;
  for (int64_t r = 0; r < rows; ++r) {
    double na = a[r].norm().item<double>(), ne = e[r].norm().item<double>();
    double cosine = (na == 0 && ne == 0) ? 1.0 : (a[r] * e[r]).sum().item<double>() / std::max(na * ne, 1e-300);
    if (!std::isfinite(cosine)) cosine = 0.0;
    least = std::min(least, std::max(-1.0, std::min(1.0, cosine)));
  }
  return least;
}

static void least(double& into, double value) {
  if (std::isnan(value)) return;
  into = std::isnan(into) ? value : std::min(into, value);
}

static const double TINY = std::numeric_limits<float>::min();

static void compare(const at::Tensor& actual, const at::Tensor& expected, double atol, double rtol, Result& result) {
  auto a = actual.detach().to(torch::kCPU).to(torch::kDouble).contiguous().flatten();
  auto e = expected.detach().to(torch::kDouble).contiguous().flatten();
  const double* pa = a.data_ptr<double>();
  const double* pe = e.data_ptr<double>();
  for (int64_t k = 0; k < a.numel(); ++k) {
    double x = pa[k], y = pe[k];
    if (x == y || (std::isnan(x) && std::isnan(y))) continue;
    double diff = std::fabs(x - y);
    if (std::isnan(diff)) diff = std::numeric_limits<double>::infinity();
    if (!(diff <= atol + rtol * std::fabs(y))) result.passed = false;
    result.max_abs = std::max(result.max_abs, diff);
    result.max_rel = std::max(result.max_rel, diff / std::max(std::fabs(y), TINY));
  }
}

static void flatten(const c10::IValue& value, std::vector<at::Tensor>& out) {
  if (value.isTensor()) {
    out.push_back(value.toTensor());
  } else if (value.isNone()) {
  } else if (value.isTuple()) {
    for (const auto& item : value.toTupleRef().elements()) flatten(item, out);
  } else if (value.isList()) {
    for (const auto& item : value.toListRef()) flatten(item, out);
  } else if (value.isTensorList()) {
    for (const auto& item : value.toTensorVector()) out.push_back(item);
  } else if (value.isGenericDict()) {
    for (const auto& item : value.toGenericDict()) flatten(item.value(), out);
  } else {
    throw std::runtime_error("an output of type " + value.tagKind() + " is not a tensor, tuple, list or dict");
  }
}

static std::string shape_text(const at::Tensor& t) {
  std::string out = "[";
  for (int64_t d = 0; d < t.dim(); ++d) out += (d ? ", " : "") + std::to_string(t.size(d));
  return out + "]";
}

static std::string what(const std::exception& error) {
  if (auto c10 = dynamic_cast<const c10::Error*>(&error)) return c10->what_without_backtrace();
  std::string text = error.what();
  auto cut = text.find("\nException raised from");
  return cut == std::string::npos ? text : text.substr(0, cut);
}

using Runner = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

static Result run_case(const Runner& run, const Case& c, const std::vector<std::string>& inputs, const SafeTensors& samples,
                       const SafeTensors& references, double atol, double rtol) {
  Result result;
  if (!c.error.empty()) {
    result.error = "no reference outputs: " + c.error;
    return result;
  }
  std::vector<at::Tensor> args;
  for (const auto& name : inputs) {
    auto found = samples.tensors.find(c.name + "/" + name);
    if (found == samples.tensors.end()) {
      result.error = "the sample inputs lack " + c.name + "/" + name;
      return result;
    }
    args.push_back(found->second);
  }
  std::vector<at::Tensor> expected;
  while (true) {
    auto found = references.tensors.find(c.name + "/output_" + std::to_string(expected.size()));
    if (found == references.tensors.end()) break;
    expected.push_back(found->second);
  }
  std::vector<at::Tensor> actual;
  try {
    torch::NoGradGuard no_grad;
    actual = run(args);
  } catch (const std::exception& error) {
    result.error = what(error);
    return result;
  }
  if (actual.size() != expected.size()) {
    result.error = "the module returned " + std::to_string(actual.size()) + " outputs; the reference has " + std::to_string(expected.size());
    return result;
  }
  result.passed = true;
  result.measured = true;
  for (size_t k = 0; k < actual.size(); ++k) {
    if (actual[k].sizes() != expected[k].sizes()) {
      result = Result();
      result.error = "output_" + std::to_string(k) + " has shape " + shape_text(actual[k]) + "; the reference has " + shape_text(expected[k]);
      return result;
    }
    compare(actual[k], expected[k], atol, rtol, result);
    least(result.min_cosine, row_cosine(actual[k], expected[k]));
  }
  std::vector<at::Tensor> float32;
  for (size_t k = 0; k < actual.size(); ++k) {
    auto found = references.tensors.find(c.name + "/float32_output_" + std::to_string(k));
    if (found == references.tensors.end() || found->second.sizes() != actual[k].sizes()) break;
    float32.push_back(found->second);
  }
  if (!actual.empty() && float32.size() == actual.size()) {
    result.has_float32 = true;
    for (size_t k = 0; k < actual.size(); ++k) {
      least(result.float32_min_cosine, row_cosine(actual[k], float32[k]));
      Result scratch;
      compare(actual[k], float32[k], 0.0, 0.0, scratch);
      result.float32_max_abs = std::max(result.float32_max_abs, scratch.max_abs);
    }
  }
  return result;
}

static std::vector<Case> read_cases(const Json& listed) {
  std::vector<Case> cases;
  for (const auto& item : listed.items) {
    const Json* name = item.get("case");
    if (!name || name->kind != Json::String) continue;
    Case c;
    c.name = name->text;
    if (const Json* shape = item.get("shape")) c.shape = *shape;
    if (const Json* error = item.get("error"); error && error->kind == Json::String) c.error = error->text;
    cases.push_back(c);
  }
  return cases;
}

static std::vector<std::string> string_list(const Json& listed) {
  std::vector<std::string> out;
  for (const auto& item : listed.items) {
    if (item.kind == Json::String) out.push_back(item.text);
  }
  return out;
}

static bool is_file(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

static int cases_run = 0, cases_failed = 0;

static void report(const std::string& artifact, const Case& c, const Result& r) {
  ++cases_run;
  if (!r.passed) ++cases_failed;
  Json line;
  line.kind = Json::Object;
  auto add = [&](const std::string& key, Json v) { line.members.emplace_back(key, std::move(v)); };
  Json s;
  s.kind = Json::String;
  s.text = artifact;
  add("artifact", s);
  s.text = c.name;
  add("case", s);
  add("shape", c.shape);
  Json b;
  b.kind = Json::Bool;
  b.boolean = r.passed;
  add("passed", b);
  Json n;
  if (r.measured) {
    n.kind = Json::Number;
    n.number = r.max_abs;
  }
  add("max_abs_error", n);
  if (r.measured) n.number = r.max_rel;
  add("max_rel_error", n);
  auto number = [](double value) {
    Json v;
    if (!std::isnan(value)) {
      v.kind = Json::Number;
      v.number = value;
    }
    return v;
  };
  if (r.measured) add("min_cosine", number(r.min_cosine));
  if (r.has_float32) {
    Json f;
    f.kind = Json::Object;
    f.members.emplace_back("min_cosine", number(r.float32_min_cosine));
    f.members.emplace_back("max_abs_error", number(r.float32_max_abs));
    add("float32", f);
  }
  if (!r.error.empty()) {
    s.text = r.error;
    add("error", s);
  }
  std::cout << write(line) << std::endl;
}

static void load_error(const std::string& artifact, const std::string& message) {
  ++cases_failed;
  std::cout << "{\"artifact\":" << quote(artifact) << ",\"load_error\":" << quote(message) << "}" << std::endl;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: tsexport_native_check BUNDLE ATOL RTOL [--inputs NAME,NAME...] [--no-aoti]\n";
    return 2;
  }
  std::string bundle = argv[1];
  double atol = 0, rtol = 0;
  try {
    atol = std::stod(argv[2]);
    rtol = std::stod(argv[3]);
  } catch (const std::exception&) {
    std::cerr << "error: ATOL and RTOL must be numbers\n";
    return 2;
  }
  std::vector<std::string> inputs;
  bool aoti = true;
  for (int k = 4; k < argc; ++k) {
    std::string arg = argv[k];
    if (arg == "--inputs" && k + 1 < argc) {
      std::stringstream list(argv[++k]);
      std::string name;
      while (std::getline(list, name, ',')) {
        if (!name.empty()) inputs.push_back(name);
      }
    } else if (arg == "--no-aoti") {
      aoti = false;
    } else {
      std::cerr << "error: unknown argument " << arg << "\n";
      return 2;
    }
  }
  SafeTensors samples, references;
  std::vector<Case> cases;
  Json artifacts;
  try {
    samples = read_safetensors(bundle + "/sample_inputs.safetensors");
    references = read_safetensors(bundle + "/reference_outputs.safetensors");
    auto meta = [&](const std::string& key) -> Json {
      auto found = samples.metadata.find(key);
      return found == samples.metadata.end() ? Json() : JsonReader(found->second).parse();
    };
    if (inputs.empty()) inputs = string_list(meta("tsexport.inputs"));
    cases = read_cases(meta("tsexport.cases"));
    if (cases.empty()) {
      for (const auto& entry : samples.tensors) {
        auto slash = entry.first.find('/');
        std::string name = entry.first.substr(0, slash);
        if (name.find('.') != std::string::npos) continue;  // split artifacts' cases (<role>.<case>)
        if (std::none_of(cases.begin(), cases.end(), [&](const Case& c) { return c.name == name; })) cases.push_back(Case{name, Json(), ""});
      }
    }
    artifacts = meta("tsexport.artifacts");
  } catch (const std::exception& error) {
    std::cout << "{\"error\":" << quote("could not read the bundle: " + what(error)) << "}" << std::endl;
    return 2;
  }
  if (inputs.empty()) {
    std::cout << "{\"error\":\"the bundle names no inputs (record.json input_signature or the tsexport.inputs metadata)\"}" << std::endl;
    return 2;
  }
  Json checked;
  checked.kind = Json::Array;
  auto mark = [&](const std::string& file) {
    Json s;
    s.kind = Json::String;
    s.text = file;
    checked.items.push_back(s);
  };

  // model.pt, then the split artifacts, each with torch::jit::load
  auto script = [&](const std::string& file, const std::vector<Case>& its_cases, const std::vector<std::string>& names) {
    mark(file);
    std::shared_ptr<torch::jit::script::Module> module;
    try {
      module = std::make_shared<torch::jit::script::Module>(torch::jit::load(bundle + "/" + file, torch::kCPU));
      module->eval();
    } catch (const std::exception& error) {
      load_error(file, "could not load " + file + " with torch::jit::load: " + what(error));
      return;
    }
    Runner run = [&](const std::vector<at::Tensor>& args) {
      std::vector<c10::IValue> values(args.begin(), args.end());
      std::vector<at::Tensor> out;
      flatten(module->forward(values), out);
      return out;
    };
    for (const auto& c : its_cases) report(file, c, run_case(run, c, names, samples, references, atol, rtol));
  };
  // a bundle built with formats: [aoti] alone has model.pt2 and no model.pt
  std::string package = bundle + "/model.pt2";
  if (is_file(bundle + "/model.pt") || !is_file(package)) script("model.pt", cases, inputs);
  for (const auto& artifact : artifacts.items) {
    const Json* file = artifact.get("file");
    if (!file || file->kind != Json::String) continue;
    std::string name = file->text.substr(file->text.rfind('/') == std::string::npos ? 0 : file->text.rfind('/') + 1);
    const Json* its_cases = artifact.get("cases");
    const Json* its_inputs = artifact.get("inputs");
    script(name, its_cases ? read_cases(*its_cases) : std::vector<Case>(), its_inputs ? string_list(*its_inputs) : std::vector<std::string>());
  }

  // model.pt2 with AOTInductor's package loader
  if (aoti && is_file(package)) {
    mark("model.pt2");
    std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
    try {
      loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(package);
    } catch (const std::exception& error) {
      load_error("model.pt2", "could not load model.pt2 with AOTIModelPackageLoader: " + what(error));
    }
    if (loader) {
      Runner run = [&](const std::vector<at::Tensor>& args) { return loader->run(args); };
      for (const auto& c : cases) report("model.pt2", c, run_case(run, c, inputs, samples, references, atol, rtol));
    }
  }
  std::cout << "{\"summary\":true,\"passed\":" << (cases_failed == 0 ? "true" : "false") << ",\"cases\":" << cases_run
            << ",\"failed\":" << cases_failed << ",\"artifacts\":" << write(checked) << ",\"torch\":" << quote(TORCH_VERSION) << "}"
            << std::endl;
  return cases_failed == 0 ? 0 : 1;
}
