// Writes the seed corpus of fuzz_model_load: a few small models, each as a
// whole file (mode byte 0) and as a bare payload of today's format (mode 1
// or 2; see fuzz_model_load.cpp). The *_v1.payload seeds (modes 3 and 4)
// were written by this program before the model-layer redesign (format 1). Run once, from the repository root:
//   g++ -std=c++17 -Iinclude -I/usr/include/eigen3 tests/fuzz/make_model_corpus.cpp -o /tmp/mc && /tmp/mc tests/fuzz/corpus/model
#include <loom/loom.hpp>

#include <fstream>
#include <iostream>
#include <string>

using namespace loom;

namespace {

void write(const std::string& dir, const std::string& name, const Sequential<float>& m) {
  const std::string file = m.to_bytes();
  std::ofstream(dir + "/" + name + ".file", std::ios::binary) << '\0' << file;
  // The payload sits between the 25-byte header and the 4-byte checksum.
  const bool training = (file[12] & 1) != 0;
  std::ofstream(dir + "/" + name + ".payload", std::ios::binary)
      << static_cast<char>(training ? 2 : 1) << file.substr(25, file.size() - 29);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_model_corpus <dir>\n";
    return 2;
  }
  const std::string dir = argv[1];

  Sequential<float> dense(1, "dense_only");
  dense.add(Flatten<float>(), Shape{4, 4, 1});
  dense.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  write(dir, "dense", dense);

  Sequential<float> cnn(2, "cnn");
  cnn.add(Conv2D<float>(Conv2DOptions(2, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)), Shape{6, 6, 1});
  cnn.add(BatchNormalization<float>());
  cnn.add(MaxPool2D<float>(MaxPool2DOptions({2, 2}).padding(Padding::Same)));
  cnn.add(Dropout<float>(0.2, 7));
  cnn.add(Flatten<float>());
  cnn.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  cnn.compile(SparseCategoricalCrossentropy<float>(), Adam<float>(), {"accuracy"});
  Tensor<float> x(Shape{4, 6, 6, 1}, 0.5f), y(Shape{4}, {0, 1, 2, 1});
  // With callbacks, so that the file holds their states (format 2).
  cnn.fit(x, y,
          FitOptions<float>().epochs(2).batch_size(2).verbose(0).callback(
              std::make_shared<EarlyStopping<float>>(EarlyStoppingOptions().monitor("loss").restore_best_weights(true))));
  write(dir, "cnn_trained", cnn);

  Sequential<float> acts(3, "activations");
  acts.add(Conv2D<float>(Conv2DOptions(1, {2, 2}).strides({2, 2})), Shape{4, 4, 2});
  acts.add(ReLU<float>());
  acts.add(ActivationLayer<float>(Activation::None));
  acts.add(Flatten<float>());
  acts.add(Dense<float>(DenseOptions(2).use_bias(false)));
  acts.add(Softmax<float>());
  acts.compile(CategoricalCrossentropy<float>(), SGD<float>(SGDOptions().momentum(0.9).nesterov(true)), {});
  write(dir, "activations", acts);

  // A graph: a residual join, a Concatenate, a layer called twice, two Dropouts (flag 2 streams).
  Symbol<float> in = Input<float>({4, 4, 1});
  Symbol<float> a = call(Conv2D<float>(Conv2DOptions(2, {3, 3}).padding(Padding::Same)), in);
  Symbol<float> b = call(Add<float>(), {a, call(Dropout<float>(0.2), a)});
  Symbol<float> c = call(GlobalAveragePooling2D<float>(), call(Concatenate<float>(), {a, b}));
  auto shared_dense = shared(Dense<float>(DenseOptions(4).activation(Activation::ReLU)));
  Symbol<float> d = call(shared_dense, call(Dropout<float>(0.1), call(Dense<float>(DenseOptions(4)), c)));
  Functional<float> graph(in, call(Dense<float>(DenseOptions(3)), call(shared_dense, d)), 4, "graph");
  graph.compile("sparse_categorical_crossentropy", {}, "sgd");
  graph.fit(Tensor<float>(Shape{4, 4, 4, 1}, 0.5f), Tensor<float>(Shape{4}, {0, 1, 2, 1}),
            FitOptions<float>().epochs(1).batch_size(2).verbose(0));
  write(dir, "graph", graph);
  std::cout << "wrote 7 seeds to " << dir << "\n";
  return 0;
}
