// Loads a guarded model.pt with libtorch (no Python), prints the forward schema, runs it inside the envelope
// (first output value) and outside (the error's message), and reads the envelope method.
// usage: guard_check MODEL.pt BATCH SEQ OUT_BATCH OUT_SEQ
#include <torch/csrc/jit/runtime/jit_exception.h>
#include <torch/script.h>

#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

static std::vector<torch::jit::IValue> ids_and_mask(int64_t batch, int64_t seq) {
  auto ids = torch::arange(batch * seq, torch::kLong).remainder(50).reshape({batch, seq});
  auto mask = torch::ones({batch, seq}, torch::kLong);
  return {ids, mask};
}

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: guard_check MODEL.pt BATCH SEQ OUT_BATCH OUT_SEQ\n";
    return 2;
  }
  torch::jit::script::Module module = torch::jit::load(argv[1]);
  module.eval();
  std::cout << "SCHEMA: " << module.get_method("forward").function().getSchema() << std::endl;
  std::cout << "ENVELOPE: " << module.run_method("tsexport_envelope").toStringRef() << std::endl;
  torch::NoGradGuard no_grad;
  auto out = module.forward(ids_and_mask(std::atoll(argv[2]), std::atoll(argv[3])));
  auto first = out.toTuple()->elements()[0].toTensor();
  std::cout << std::setprecision(9) << "INSIDE: outputs " << out.toTuple()->elements().size() << " first " << first.flatten()[0].item<double>()
            << std::endl;
  try {
    module.forward(ids_and_mask(std::atoll(argv[4]), std::atoll(argv[5])));
    std::cout << "OUTSIDE: not refused" << std::endl;
    return 1;
  } catch (const c10::Error& error) {
    std::cout << "OUTSIDE: c10::Error\n" << error.what_without_backtrace() << "\nEND" << std::endl;
  } catch (const torch::jit::JITException& error) {
    // A TorchScript `raise` arrives as JITException (a std::runtime_error), not as a c10::Error.
    std::cout << "OUTSIDE: torch::jit::JITException python_class="
              << error.getPythonClassName().value_or("?") << "\n" << error.what() << "\nEND" << std::endl;
    std::cout << "ORIGINAL: " << error.getOriginalMsg().value_or("?") << std::endl;
  } catch (const std::exception& error) {
    std::cout << "OUTSIDE: std::exception\n" << error.what() << "\nEND" << std::endl;
  }
  return 0;
}
