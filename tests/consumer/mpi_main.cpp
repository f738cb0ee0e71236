// A user's program that trains data-parallel: one more include, one more
// target. Run as one process here (MPI's singleton mode); under mpirun every
// process would take its share of each batch.
#include <loom/distributed.hpp>
#include <loom/loom.hpp>

#include <iostream>

int main(int argc, char** argv) {
  using namespace loom;
  mpi::Environment environment(argc, argv);
  Sequential<float> model;
  model.add(Dense<float>(DenseOptions(2).activation(Activation::Softmax)), Shape{4});
  model.compile("sparse_categorical_crossentropy", {"accuracy"}, "sgd");
  Tensor<float> x(Shape{8, 4}, 0.5f), y(Shape{8});
  const History h = model.fit(x, y, FitOptions<float>().epochs(2).verbose(0).distributed(mpi::world()));
  std::cout << "loom::mpi: rank " << mpi::world()->rank() << " of " << mpi::world()->size() << " trained "
            << h.history.at("loss").size() << " epochs\n";
  return h.history.at("loss").size() == 2 ? 0 : 1;
}
