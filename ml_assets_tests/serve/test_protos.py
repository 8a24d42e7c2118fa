"""The committed gRPC modules are exactly what grpcio-tools makes of bentos/predictor.proto."""

from __future__ import annotations

from ml_assets.serve import predictor_pb2, protos


def test_committed_stubs_match_the_proto() -> None:
    fresh = protos.generate()
    for name, text in fresh.items():
        committed = (protos.HERE / name).read_text()
        assert committed == text, (
            f"ml_assets/serve/{name} is stale: run `python -m ml_assets.serve.protos`"
        )


def test_descriptor_names_the_service_and_its_methods() -> None:
    service = predictor_pb2.DESCRIPTOR.services_by_name["Predictor"]
    assert service.full_name == "ml_assets.serving.v1.Predictor"
    assert [m.name for m in service.methods] == ["Predict", "PredictByKeys", "ModelInfo"]
    assert predictor_pb2.DESCRIPTOR.name == protos.PROTO_PATH
