// A user's program with Keras files: one more include, one more target.
#include <loom/keras.hpp>

#include <cstdio>
#include <cstring>
#include <iostream>

int main() {
  using namespace loom;
  Sequential<float> model;
  model.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).activation(Activation::ReLU)), Shape{8, 8, 1});
  model.add(BatchNormalization<float>());
  model.add(Flatten<float>());
  model.add(Dense<float>(DenseOptions(2).activation(Activation::Softmax)));
  const Tensor<float> x(Shape{3, 8, 8, 1}, 0.25f);
  const Tensor<float> before = model.predict(x);
  keras::save_model(model, "consumer.keras");
  auto back = keras::load_model<float>("consumer.keras");
  const Tensor<float> after = back.predict(x);
  const bool same = std::memcmp(before.data(), after.data(), sizeof(float) * 6) == 0;
  std::cout << "loom::keras: saved and loaded consumer.keras, predictions " << (same ? "identical" : "DIFFER") << "\n";
  return same ? 0 : 1;
}
