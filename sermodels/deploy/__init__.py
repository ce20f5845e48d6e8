"""Taking a model out of PyTorch: ONNX export (:mod:`sermodels.deploy.onnx`) and the onnxruntime backend of
``sermodels predict`` (:mod:`sermodels.deploy.onnx_backend`). onnx and onnxruntime are the ``onnx`` extra; nothing
here is imported by the models, the training code or the default prediction path."""
