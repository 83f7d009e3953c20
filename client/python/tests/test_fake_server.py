"""The client against an in-process fake server: metadata, malformed streams, mid-stream errors."""

import time
from concurrent import futures

import grpc
import numpy as np
import pytest

import glassbox
from glassbox._proto.glassbox.v1 import glassbox_pb2 as pb
from glassbox._proto.glassbox.v1 import glassbox_pb2_grpc as pb_grpc

_INFO = pb.ModelInfo(name="fake", architecture="gpt2", n_layers=1, d_model=2, vocab_size=10)


def _header(nbytes=8):
    return pb.RunResponse(header=pb.Header(
        model="fake",
        sequence_lengths=[2],
        tokens=[pb.TokenSequence(ids=[1, 2])],
        tensors=[pb.CapturedTensorInfo(id=0, name="hook_embed", shape=[1, 2], dim_names=["batch", "pos"],
                                       dtype=pb.DTYPE_F32, nbytes=nbytes)],
    ))


def _chunk(data, offset=0, last=True):
    return pb.RunResponse(chunk=pb.TensorChunk(capture_id=0, offset=offset, data=data, last=last))


_VALUES = np.array([[1.5, -2.0]], dtype="<f4")
_SCRIPTS = {
    "good": [_header(), _chunk(_VALUES.tobytes()[:3], last=False), _chunk(_VALUES.tobytes()[3:], offset=3),
             pb.RunResponse(summary=pb.Summary(bytes_sent=8))],
    "chunk-first": [_chunk(b"\0" * 8)],
    "no-summary": [_header(), _chunk(_VALUES.tobytes())],
    "gap": [_header(), _chunk(b"\0" * 4, offset=4)],
}


class FakeGlassbox(pb_grpc.GlassboxServicer):
    def __init__(self):
        self.metadata = []

    def ListModels(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        return pb.ListModelsResponse(models=[_INFO])

    def GetModelInfo(self, request, context):
        return _INFO

    def ListSaes(self, request, context):
        time.sleep(0.5)  # slower than the deadline in test_client_timeout_is_the_default_deadline
        return pb.ListSaesResponse()

    def Run(self, request, context):
        if request.model == "abort":
            yield _header()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "over the response limit")
        for message in _SCRIPTS[request.model]:
            yield message


@pytest.fixture(scope="module")
def fake():
    servicer = FakeGlassbox()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_GlassboxServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def _model(client, name):
    return glassbox.Model(client, glassbox.ModelInfo.from_proto(pb.ModelInfo(name=name, n_layers=1)))


def test_api_key_is_sent_as_bearer_metadata(fake):
    servicer, address = fake
    with glassbox.connect(address, api_key="secret-key", timeout=30) as client:
        assert [m.name for m in client.models()] == ["fake"]
    assert servicer.metadata[-1]["authorization"] == "Bearer secret-key"


def test_client_timeout_is_the_default_deadline(fake):
    with glassbox.connect(fake[1], timeout=0.05) as client:
        with pytest.raises(glassbox.DeadlineExceeded):
            client.saes()
        client.timeout = None  # assignable: later calls, the models' included, have no deadline
        assert client.transport.timeout is None
        assert client.saes() == []


def test_chunked_tensor_is_reassembled(fake):
    with glassbox.connect(fake[1], timeout=30) as client:
        result = _model(client, "good").run([[1, 2]], captures="hook_embed", logits="none")
    np.testing.assert_array_equal(result.cache["hook_embed"], _VALUES)
    assert result.cache.dims("hook_embed") == ("batch", "pos")
    assert result.bytes_sent == 8


@pytest.mark.parametrize("script, problem", [
    ("chunk-first", "before the header"),
    ("no-summary", "without a summary"),
    ("gap", "offset 4, but 0 bytes"),
])
def test_malformed_streams_raise(fake, script, problem):
    with glassbox.connect(fake[1], timeout=30) as client:
        with pytest.raises(glassbox.MalformedStream, match=problem):
            _model(client, script).run([[1, 2]], logits="none")


def test_error_in_the_middle_of_a_stream(fake):
    with glassbox.connect(fake[1], timeout=30) as client:
        stream = _model(client, "abort").stream([[1, 2]])
        assert stream.header.tensors[0].name == "hook_embed"
        with pytest.raises(glassbox.ResourceExhausted, match="over the response limit") as error:
            list(stream)
    assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
