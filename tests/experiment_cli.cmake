# Runs the fashion_mnist_experiment program as a user would: the --quick
# smoke run on the real data, and bad inputs, each of which must give one
# readable line on stderr and a non-zero exit (never a signal).
#   cmake -DEXE=<program> -DWORK_DIR=<scratch dir> -P experiment_cli.cmake
cmake_policy(SET CMP0054 NEW)  # a quoted "improved" is the word, not the variable of that name
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

# expect(<name> <exit code> <stderr regex> args...)
function(expect name code pattern)
  execute_process(COMMAND ${EXE} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT "${rc}" STREQUAL "${code}")
    message(FATAL_ERROR "${name}: exit '${rc}', expected ${code}\nstdout:\n${out}\nstderr:\n${err}")
  endif()
  if(NOT code EQUAL 0)
    string(REGEX MATCHALL "\n" newlines "${err}")
    list(LENGTH newlines lines)
    if(NOT lines EQUAL 1 OR NOT err MATCHES "${pattern}")
      message(FATAL_ERROR "${name}: stderr should be one line matching '${pattern}', got:\n${err}")
    endif()
  endif()
  message(STATUS "${name}: ok (exit ${rc}) ${err}")
endfunction()

# Bad options and bad places.
expect(help 0 "" --help)
expect(unknown_model 2 "^fashion_mnist_experiment: --models: Value 5 not in range" --models 5)
expect(repeated_model 2 "each model may be named once" --models 1 1)
expect(zero_batch 2 "^fashion_mnist_experiment: --batch-size" --batch-size 0)
expect(nonsense_epochs 2 "^fashion_mnist_experiment: --epochs" --epochs many)
expect(unknown_option 2 "^fashion_mnist_experiment: The following argument was not expected" --frobnicate)
expect(missing_data 1 "Fashion-MNIST not found: ${WORK_DIR}/nothing has no train-images-idx3-ubyte\\[.gz\\]; install Debian's package"
       --data-dir ${WORK_DIR}/nothing --out ${WORK_DIR}/out_missing)
set(ENV{LOOM_NUM_THREADS} "two")
expect(bad_thread_variable 1 "LOOM_NUM_THREADS must be a whole number from 1 to 1024, got 'two'" --out ${WORK_DIR}/out_threads)
unset(ENV{LOOM_NUM_THREADS})
file(WRITE ${WORK_DIR}/a_file "not a folder")
expect(unwritable_output 1 "cannot create the output folder" --out ${WORK_DIR}/a_file/results)

# A data set whose training images are truncated and whose labels have the wrong magic.
set(bad ${WORK_DIR}/bad_data)
file(MAKE_DIRECTORY ${bad})
foreach(f train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
  file(WRITE ${bad}/${f} "")
endforeach()
expect(empty_files 1 "train-images-idx3-ubyte: truncated: 0 bytes" --data-dir ${bad} --out ${WORK_DIR}/out_bad)

# A wrong magic number in one file, a truncated gzip stream in another (the rest real).
set(real /usr/share/datasets/fashion-mnist)
foreach(case magic truncated)
  set(dir ${WORK_DIR}/${case}_data)
  file(MAKE_DIRECTORY ${dir})
  foreach(f train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte)
    file(CREATE_LINK ${real}/${f}.gz ${dir}/${f}.gz SYMBOLIC)
  endforeach()
endforeach()
file(WRITE ${WORK_DIR}/magic_data/t10k-labels-idx1-ubyte "GARBAGE, not an IDX file")
file(COPY_FILE ${real}/t10k-labels-idx1-ubyte.gz ${WORK_DIR}/truncated_data/t10k-labels-idx1-ubyte.gz)
execute_process(COMMAND truncate -s 2000 ${WORK_DIR}/truncated_data/t10k-labels-idx1-ubyte.gz COMMAND_ERROR_IS_FATAL ANY)
expect(wrong_magic 1 "magic_data/t10k-labels-idx1-ubyte: not an IDX file: magic 0x47 0x41 0x52 0x42"
       --data-dir ${WORK_DIR}/magic_data --out ${WORK_DIR}/out_magic)
expect(truncated_gzip 1 "truncated_data/t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip stream"
       --data-dir ${WORK_DIR}/truncated_data --out ${WORK_DIR}/out_truncated)

# A read-only place for the output: /proc takes no new folders, even from root.
expect(read_only_output 1 "^fashion_mnist_experiment: /proc/loom_results: cannot create the output folder" --out /proc/loom_results)

# The smoke run on the real data: every output file is there, and each model saved for Keras and as ONNX.
expect(quick 0 "" --quick --verbose 2 --out ${WORK_DIR}/quick --save-keras ${WORK_DIR}/quick/keras
       --save-onnx ${WORK_DIR}/quick/onnx)
# expect_files(<name> <folder> files...): each was written.
function(expect_files name folder)
  foreach(f ${ARGN})
    if(NOT EXISTS ${folder}/${f})
      message(FATAL_ERROR "${name}: ${f} was not written")
    endif()
  endforeach()
endfunction()
expect_files(quick ${WORK_DIR}/quick results.json report.md training_curves.png model1_misclassified.png
             model1_classes.png model2_classes.png model3_classes.png model4_misclassified.png
             checkpoints/model4.loom checkpoints/model1_best.weights keras/model1.keras keras/model4.keras
             onnx/model1.onnx onnx/model4.onnx)
file(READ ${WORK_DIR}/quick/results.json json)
string(JSON models LENGTH "${json}" models)
string(JSON acc GET "${json}" models 2 test_accuracy)
if(NOT models EQUAL 4 OR acc LESS 0.5)
  message(FATAL_ERROR "quick: results.json has ${models} models, model 3 test accuracy ${acc}")
endif()
message(STATUS "quick: results.json has 4 models; model 3 test accuracy ${acc}")

# The improved recipe's search knobs: refused without it, and a checkpoint
# refuses to resume under other knobs than it was trained with.
expect(knob_without_recipe 2 "^fashion_mnist_experiment: --peak-lr is for --recipe improved" --peak-lr 0.001)
expect(improved_quick 0 "" --quick --recipe improved --models 2 --verbose 0 --out ${WORK_DIR}/improved)
expect(improved_other_knobs 1 "checkpoint was trained with other --translation, --peak-lr, --weight-decay, --label-smoothing or --erasing"
       --quick --recipe improved --models 2 --verbose 0 --translation 0.1 --resume --out ${WORK_DIR}/improved)
expect(improved_as_notebook 1 "checkpoint was trained with the improved recipe; give --recipe improved"
       --quick --models 2 --verbose 0 --resume --out ${WORK_DIR}/improved)

# The improved recipe refits on every training image: no validation split, no
# best-validation weights, and its checkpoint refuses to resume on the split.
file(READ ${WORK_DIR}/improved/results.json improved)
string(JSON train_images GET "${improved}" train_images)
string(JSON validation_images GET "${improved}" validation_images)
string(JSON best_epoch TYPE "${improved}" models 0 best_val_epoch)
string(JSON history_keys LENGTH "${improved}" models 0 history)
if(NOT train_images EQUAL 4000 OR NOT validation_images EQUAL 0 OR NOT best_epoch STREQUAL "NULL"
   OR NOT history_keys EQUAL 2)
  message(FATAL_ERROR "improved: ${train_images} training and ${validation_images} validation images, best epoch "
                      "${best_epoch}, ${history_keys} history keys (want 4000, 0, NULL, 2: loss and accuracy)")
endif()
if(EXISTS ${WORK_DIR}/improved/checkpoints/model2_best.weights)
  message(FATAL_ERROR "improved: a best-validation file was written without a validation split")
endif()
# The residual network (--model resnet): the improved recipe on model 2 by default, its checkpoint
# refused by the notebook's model and the other way round, and the exports it does not have yet refused.
expect(resnet_no_onnx 2 "^fashion_mnist_experiment: --save-onnx does not work with --model resnet yet"
       --model resnet --save-onnx ${WORK_DIR}/resnet_onnx)
# (Model 1: one-hot targets, whose label-smoothed loss Keras has; the sparse one has none, so model 2 is not exported.)
expect(resnet_quick 0 "" --quick --model resnet --models 1 --verbose 0 --out ${WORK_DIR}/resnet --save-keras ${WORK_DIR}/resnet/keras)
if(NOT EXISTS ${WORK_DIR}/resnet/keras/model1.keras)
  message(FATAL_ERROR "resnet_quick: no ${WORK_DIR}/resnet/keras/model1.keras")
endif()
file(READ ${WORK_DIR}/resnet/results.json resnet_json)
string(JSON resnet_model GET "${resnet_json}" model)
string(JSON resnet_recipe GET "${resnet_json}" recipe)
string(JSON resnet_id GET "${resnet_json}" models 0 model)
if(NOT resnet_model STREQUAL "resnet" OR NOT resnet_recipe STREQUAL "improved" OR NOT resnet_id EQUAL 1)
  message(FATAL_ERROR "resnet_quick: model ${resnet_model}, recipe ${resnet_recipe}, model id ${resnet_id}")
endif()
expect(notebook_on_resnet 1 "checkpoint is of the residual network; give --model resnet"
       --quick --recipe improved --models 1 --verbose 0 --resume --out ${WORK_DIR}/resnet)
expect(resnet_on_notebook 1 "checkpoint is of the notebook's model; give --model notebook"
       --quick --model resnet --verbose 0 --resume --out ${WORK_DIR}/improved)

expect(improved_on_split 1 "checkpoint was trained on every training image \\(--refit\\); give the same"
       --quick --recipe improved --no-refit --models 2 --verbose 0 --resume --out ${WORK_DIR}/improved)
expect(refit_without_validation 2 "^fashion_mnist_experiment: --bn-probe needs the validation images"
       --recipe improved --bn-probe)
expect(refit_both_ways 2 "^fashion_mnist_experiment: --refit excludes --no-refit" --refit --no-refit)

# A model saved for Keras, and as ONNX, comes back through --import with the
# same test accuracy (model 3 takes raw pixels), and the analysis of it is all there.
function(expect_import name file)
  expect(${name} 0 "" --import ${file} --import-raw-pixels --out ${WORK_DIR}/${name})
  expect_files(${name} ${WORK_DIR}/${name} results.json report.md imported_misclassified.png imported_classes.png)
  file(READ ${WORK_DIR}/${name}/results.json imported)
  string(JSON imported_acc GET "${imported}" test_accuracy)
  if(NOT imported_acc EQUAL acc)
    message(FATAL_ERROR "${name}: test accuracy ${imported_acc}, the experiment measured ${acc}")
  endif()
  message(STATUS "${name}: model 3 from ${file} scores ${imported_acc}, as trained")
endfunction()
expect_import(imported ${WORK_DIR}/quick/keras/model3.keras)
expect_import(imported_onnx ${WORK_DIR}/quick/onnx/model3.onnx)
expect(import_not_a_model 1 "^fashion_mnist_experiment: .*report.md: neither a .keras \\(zip\\) nor an .h5"
       --import ${WORK_DIR}/quick/report.md --out ${WORK_DIR}/imported_bad)
expect(import_missing 2 "^fashion_mnist_experiment: --import: File does not exist"
       --import ${WORK_DIR}/nothing.keras --out ${WORK_DIR}/imported_bad)
