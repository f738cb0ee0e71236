// A user's program: one include, a model, one training step.
#include <loom/loom.hpp>

#include <cmath>
#include <iostream>

int main() {
  using namespace loom;
  Sequential<float> model;
  model.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)),
            Shape{8, 8, 1});
  model.add(Flatten<float>());
  model.add(Dense<float>(DenseOptions(2).activation(Activation::Softmax)));
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  Tensor<float> x(Shape{4, 8, 8, 1}, 0.5f), y(Shape{4}, {0, 1, 0, 1});
  const double loss = model.train_step(x, y);
  std::cout << "loom " << loom::version << ": " << model.count_params() << " parameters, loss " << loss << "\n";
  return model.count_params() == 4 * 9 + 4 + 256 * 2 + 2 && std::isfinite(loss) ? 0 : 1;
}
