"""Serving: a TF-Serving-compatible model server (`vtcaps serve`) and the `vtcaps predict` client.

Modules (imported on use; grpc and the serving protos load only with the server):
  servables.py     versions on disk -> loaded servables; polling and atomic version switches
  rest.py          TF Serving's REST API on the stdlib HTTP server
  grpc_service.py  PredictionService and ModelService on the tensorflow-serving-api protos
  inference.py     Classify, Regress and MultiInference over serialized tf.Example
  json_codec.py    REST JSON <-> numpy tensors (vectorised decoding of numeric arrays)
  config_file.py   --model-config-file (ModelServerConfig text format)
  server.py        ModelServer and `vtcaps serve`
  client.py        a small REST client
  predict.py       `vtcaps predict`: videos -> face analysis -> clips -> per-clip emotions
"""
