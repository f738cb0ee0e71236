#pragma once
// How fashion_mnist_experiment builds and compiles a model for --recipe
// (the notebook's RMSprop, or the improved recipe's AdamW, schedule,
// label smoothing and augmentation), and whether a checkpoint given to
// --resume was trained that way.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include <loom/loom.hpp>

#include "experiment_options.hpp"
#include "notebook_model.hpp"
#include "resnet_model.hpp"

namespace loom::examples {

/// The notebook's model as `opt` asks for it: synchronized BatchNormalization
/// (--sync-bn), and the improved recipe's augmentation layers.
inline NotebookModelOptions notebook_variant(const ExperimentOptions& opt) {
  NotebookModelOptions variant;
  variant.synchronized_batch_norm = opt.sync_bn;
  variant.augment = opt.improved();
  variant.translation = opt.improved_recipe.translation;
  variant.erasing = opt.improved_recipe.erasing;
  return variant;
}

/// The residual network as `opt` asks for it: the improved recipe's augmentation.
inline ResNetOptions resnet_variant(const ExperimentOptions& opt) {
  ResNetOptions variant;
  variant.augment = opt.improved();
  variant.translation = opt.improved_recipe.translation;
  return variant;
}

/// The model of a run: the notebook's, or with --model resnet the residual network.
inline Sequential<float> model_for(const ExperimentOptions& opt, std::uint64_t seed) {
  if (opt.resnet()) return resnet_model<float>(seed, 10, resnet_variant(opt));
  return notebook_model<float>(seed, 10, notebook_variant(opt));
}

/// The types of a model's layers, those inside a graph (a functional model's) included.
inline std::vector<std::string> layer_types(const Sequential<float>& model) {
  std::vector<std::string> types;
  for (const auto& layer : model.layers()) {
    if (const auto* graph = dynamic_cast<const Graph<float>*>(layer.get())) {
      for (const Layer<float>* inner : graph->layers()) types.push_back(inner->type());
    } else {
      types.push_back(layer->type());
    }
  }
  return types;
}

/// Compiles `model` as the recipe says: the notebook's compile() (its loss,
/// RMSprop with Keras's defaults and the rule asked for, accuracy), or the
/// improved recipe's AdamW with a warmup-cosine schedule over `steps`
/// updates per epoch and `epochs` epochs, and label smoothing.
inline void compile_for_recipe(Sequential<float>& model, const ModelSpec& spec, const ExperimentOptions& opt,
                               int epochs, long steps) {
  auto loss = make_loss<float>(spec.loss());
  if (!opt.improved()) {
    model.compile(std::move(loss), std::make_unique<RMSprop<float>>(RMSpropOptions().epsilon_inside_sqrt(!opt.legacy_rmsprop)),
                  {"accuracy"});
    return;
  }
  const ImprovedRecipe& recipe = opt.improved_recipe;
  loss->set_label_smoothing(recipe.label_smoothing);
  const double warmup = static_cast<double>(steps), total = static_cast<double>(steps) * epochs;
  auto schedule = std::make_shared<CosineDecay>(0.0, std::max(1.0, total - warmup), 0.0, recipe.peak_lr, warmup);
  model.compile(std::move(loss),
                std::make_unique<AdamW<float>>(
                    AdamW<float>::defaults().learning_rate(schedule).weight_decay(recipe.weight_decay)),
                {"accuracy"});
}

/// Throws FormatError, naming `path` and the option that differs, unless the
/// checkpoint `model` belongs to model `spec` as `opt` trains it: the same
/// seed, loss, recipe and split (--refit), the same RMSprop rule or (improved
/// recipe) the same knobs and `steps` per epoch, and no more than `epochs`
/// epochs done.
inline void check_checkpoint(const Sequential<float>& model, const ModelSpec& spec, std::uint64_t seed, int epochs,
                             const ExperimentOptions& opt, long steps, const std::string& path) {
  const bool legacy_rmsprop = opt.legacy_rmsprop;
  if ((model.name() == "resnet") != opt.resnet()) {
    throw FormatError(path + ": this checkpoint is of the " + (opt.resnet() ? "notebook's model" : "residual network") +
                      "; give --model " + (opt.resnet() ? "notebook" : "resnet") + " to resume it, or remove it");
  }
  if (!model.compiled() || model.seed() != seed || model.loss().type() != make_loss<float>(spec.loss())->type() ||
      model.position().epoch > epochs) {
    throw FormatError(path + ": this checkpoint is not of model " + std::to_string(spec.id) +
                      " with these options (seed, loss or epochs differ); remove it or drop --resume");
  }
  if (to_string(model.policy()) != opt.precision) {
    throw FormatError(path + ": this checkpoint was trained with --precision " + to_string(model.policy()) +
                      "; give the same to resume it, or remove it");
  }
  if ((model.optimizer().type() == "AdamW") != opt.improved()) {
    throw FormatError(path + ": this checkpoint was trained with the " + (opt.improved() ? "notebook's" : "improved") +
                      " recipe; give --recipe " + (opt.improved() ? "notebook" : "improved") + " to resume it, or remove it");
  }
  // A finished epoch records val_accuracy exactly when there was a validation split.
  if (model.position().epoch > 0 && model.history().has("val_accuracy") == opt.refit) {
    throw FormatError(path + ": this checkpoint was trained " +
                      (opt.refit ? "on the notebook's split (--no-refit)" : "on every training image (--refit)") +
                      "; give the same to resume it, or remove it");
  }
  const Config c = model.optimizer().config();
  if (opt.improved()) {
    const ImprovedRecipe& recipe = opt.improved_recipe;
    bool translates = false, erases = false;
    for (const std::string& type : layer_types(model)) {
      translates = translates || type == "RandomTranslation";
      erases = erases || type == "RandomErasing";
    }
    if (c.real("learning_rate_schedule.warmup_steps", 0) != static_cast<double>(steps)) {
      throw FormatError(path + ": this checkpoint's schedule was set for another number of steps per epoch "
                               "(other --batch-size, --quick or --refit); give the same ones to resume it, or remove it");
    }
    if (c.real("weight_decay", 0) != recipe.weight_decay ||
        c.real("learning_rate_schedule.warmup_target", 0) != recipe.peak_lr ||
        model.loss().config().real("label_smoothing", 0) != recipe.label_smoothing ||
        translates != (recipe.translation > 0) || erases != (recipe.erasing > 0)) {
      throw FormatError(path + ": this checkpoint was trained with other --translation, --peak-lr, --weight-decay, "
                               "--label-smoothing or --erasing; give the same ones to resume it, or remove it");
    }
    return;
  }
  if (model.optimizer().type() != "RMSprop" || c.flag("epsilon_inside_sqrt", true) == legacy_rmsprop) {
    throw FormatError(path + ": this checkpoint was trained with " +
                      (legacy_rmsprop ? "today's RMSprop rule; drop --legacy-rmsprop"
                                      : "TensorFlow 2.0-2.10's RMSprop rule; add --legacy-rmsprop") +
                      " to resume it, or remove it");
  }
}

}  // namespace loom::examples
