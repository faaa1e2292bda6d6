// Loads an AOTInductor package (model.pt2) with libtorch (no Python), runs it on the given inputs and prints every
// output: a header line then its values.
// usage: aoti_check MODEL.pt2 TENSOR...      a TENSOR is DTYPE:SHAPE:VALUES, e.g. int64:2x3:1,2,3,4,5,6
//        aoti_check MODEL.pt2 @FILE          FILE holds one TENSOR per line (blank lines and # comments skipped)
// DTYPE: int64, int32, float32, float64 or bool; SHAPE: sizes joined by x (an empty shape is a scalar).
// prints: INPUTS n, then per output `OUTPUT i DTYPE d0xd1x...` and `VALUES v0 v1 ...` (%.9g), then DONE;
//         on a failure `ERROR: <what>` and exit status 1.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

static std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream stream(text);
  while (std::getline(stream, part, sep)) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

static at::ScalarType parse_dtype(const std::string& name) {
  if (name == "int64") return at::kLong;
  if (name == "int32") return at::kInt;
  if (name == "float32") return at::kFloat;
  if (name == "float64") return at::kDouble;
  if (name == "bool") return at::kBool;
  throw std::invalid_argument("unknown dtype " + name);
}

static std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kBool: return "bool";
    default: return c10::toString(type);
  }
}

static at::Tensor parse_tensor(const std::string& spec) {
  auto first = spec.find(':');
  auto second = first == std::string::npos ? std::string::npos : spec.find(':', first + 1);
  if (second == std::string::npos) throw std::invalid_argument("a tensor is DTYPE:SHAPE:VALUES, got " + spec);
  auto dtype = parse_dtype(spec.substr(0, first));
  std::vector<int64_t> shape;
  for (const auto& size : split(spec.substr(first + 1, second - first - 1), 'x')) shape.push_back(std::stoll(size));
  std::vector<double> values;
  for (const auto& value : split(spec.substr(second + 1), ',')) values.push_back(std::stod(value));
  int64_t count = 1;
  for (auto size : shape) count *= size;
  if (count != static_cast<int64_t>(values.size())) {
    throw std::invalid_argument("shape wants " + std::to_string(count) + " values, got " + std::to_string(values.size()));
  }
  auto data = torch::tensor(values, torch::kDouble);
  return data.reshape(shape).to(dtype).contiguous();
}

static std::vector<std::string> read_specs(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::invalid_argument("cannot read " + path);
  std::vector<std::string> specs;
  std::string line;
  while (std::getline(file, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty() && line[0] != '#') specs.push_back(line);
  }
  return specs;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: aoti_check MODEL.pt2 TENSOR... | aoti_check MODEL.pt2 @FILE\n";
    return 2;
  }
  try {
    std::vector<std::string> specs;
    for (int i = 2; i < argc; ++i) {
      std::string arg = argv[i];
      if (!arg.empty() && arg[0] == '@') {
        auto more = read_specs(arg.substr(1));
        specs.insert(specs.end(), more.begin(), more.end());
      } else {
        specs.push_back(arg);
      }
    }
    std::vector<at::Tensor> inputs;
    for (const auto& spec : specs) inputs.push_back(parse_tensor(spec));
    std::cout << "INPUTS " << inputs.size() << std::endl;
    torch::NoGradGuard no_grad;
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    std::vector<at::Tensor> outputs = loader.run(inputs);
    for (size_t i = 0; i < outputs.size(); ++i) {
      auto output = outputs[i].contiguous();
      std::string shape;
      for (int64_t d = 0; d < output.dim(); ++d) shape += (d ? "x" : "") + std::to_string(output.size(d));
      std::cout << "OUTPUT " << i << " " << dtype_name(output.scalar_type()) << " " << shape << "\n";
      auto flat = output.to(torch::kDouble).flatten();
      auto values = flat.accessor<double, 1>();
      std::cout << "VALUES";
      char buffer[32];
      for (int64_t k = 0; k < flat.numel(); ++k) {
        std::snprintf(buffer, sizeof(buffer), " %.9g", values[k]);
        std::cout << buffer;
      }
      std::cout << "\n";
    }
    std::cout << "DONE" << std::endl;
  } catch (const c10::Error& error) {
    std::cout << "ERROR: " << error.what_without_backtrace() << std::endl;
    return 1;
  } catch (const std::exception& error) {
    std::cout << "ERROR: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
