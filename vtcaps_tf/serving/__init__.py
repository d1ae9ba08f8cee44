"""Serving: a TF-Serving-compatible model server (`vtcaps serve`) and the `vtcaps predict` client.

Modules (imported on use; grpc and the serving protos load only with the server):
  servables.py     versions on disk -> loaded servables; polling and atomic version switches
  rest.py          TF Serving's REST API on the stdlib HTTP server
  grpc_service.py  PredictionService and ModelService on the tensorflow-serving-api protos
  predictor.py     the one Predict path: gRPC's PredictRequest, and REST's JSON turned into one
  inference.py     Classify, Regress and MultiInference over serialized tf.Example
  batching.py      request batching with TF Serving's semantics (a Batcher per signature)
  config_protos.py BatchingParameters and MonitoringConfig (TF Serving's text-format files)
  metrics.py       Prometheus metrics under TF Serving's names, a registry per server
  warmup.py        replay of a version's warm-up file (or zero batches) before it is served
  frame_guard.py   refuses served records whose JPEG frames exceed the model's crop, from headers
  json_codec.py    REST JSON <-> numpy tensors (vectorised decoding of numeric arrays)
  config_file.py   --model-config-file (ModelServerConfig text format)
  server.py        ModelServer and `vtcaps serve`
  client.py        a small REST client
  predict.py       `vtcaps predict`: videos -> face analysis -> clips -> per-clip emotions
"""
