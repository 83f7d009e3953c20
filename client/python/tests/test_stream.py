"""Model.stream(): tensors arrive one by one, in forward order; malformed streams are errors."""

import numpy as np
import pytest

import glassbox
from glassbox._proto.glassbox.v1 import glassbox_pb2 as pb
from glassbox._stream import RunStreamDecoder

from _helpers import reference


def test_stream_yields_in_forward_order(model):
    tokens = reference(model.name)["unpadded.input_ids"]
    full = model.run(tokens, captures="*", logits="none")
    forward = model.info.hook_names

    with model.stream(tokens, captures="*", logits="last", chunk_bytes=1000) as stream:
        header = stream.header
        assert [t.name for t in header.tensors] == list(forward) + ["logits"]
        assert header.sequence_lengths.tolist() == [11, 11, 11]
        items = list(stream)
        assert stream.summary is not None and stream.summary.bytes_sent > 0

    names = [name for name, _ in items]
    assert names == list(forward) + ["logits"]
    for name, array in items[:-1]:
        np.testing.assert_array_equal(array, full.cache[name])
    assert items[-1][1].shape == (3, 300)


def test_stream_can_stop_early(gpt2):
    tokens = reference("tiny-gpt2")["unpadded.input_ids"]
    with gpt2.stream(tokens, captures="blocks.*.hook_resid_post") as stream:
        name, array = next(stream)
        assert name == "blocks.0.hook_resid_post"
        assert array.shape == (3, 11, 64)
    # Leaving the block cancelled the run; the server keeps serving.
    assert gpt2.run(tokens, logits="last").logits.shape == (3, 300)


def test_iter_tensors_gives_infos(gpt2):
    tokens = reference("tiny-gpt2")["unpadded.input_ids"]
    stream = gpt2.stream(tokens, captures=glassbox.Capture("blocks.0.hook_mlp_out", dtype="f16"))
    (info, array), = list(stream.iter_tensors())
    assert info.name == "blocks.0.hook_mlp_out"
    assert info.dtype == "f16" and array.dtype == np.float16
    assert info.dim_names == ("batch", "pos", "d_model")
    assert info.nbytes == array.nbytes


# ---- the decoder on hand-made streams ----

def _header(*tensors):
    return pb.RunResponse(
        header=pb.Header(
            model="m",
            sequence_lengths=[2],
            tokens=[pb.TokenSequence(ids=[1, 2])],
            tensors=[pb.CapturedTensorInfo(id=i, name=n, shape=s, dtype=pb.DTYPE_F32, nbytes=4 * int(np.prod(s)))
                     for i, (n, s) in enumerate(tensors)],
        )
    )


def _chunk(capture_id, offset, data, last):
    return pb.RunResponse(chunk=pb.TensorChunk(capture_id=capture_id, offset=offset, data=data, last=last))


SUMMARY = pb.RunResponse(summary=pb.Summary(bytes_sent=8))


def test_decoder_assembles_interleaved_chunks():
    a = np.arange(4, dtype="<f4")
    b = -np.arange(2, dtype="<f4")
    decoder = RunStreamDecoder()
    done = []
    for message in (
        _header(("a", [2, 2]), ("b", [2])),
        _chunk(0, 0, a.tobytes()[:6], False),
        _chunk(1, 0, b.tobytes(), True),
        _chunk(0, 6, a.tobytes()[6:], True),
        SUMMARY,
    ):
        item = decoder.feed(message)
        if item:
            done.append(item)
    decoder.finish()
    assert [info.name for info, _ in done] == ["b", "a"]
    np.testing.assert_array_equal(done[1][1], a.reshape(2, 2))
    assert done[1][1].flags.writeable


@pytest.mark.parametrize(
    "messages, problem",
    [
        ([_chunk(0, 0, b"\0" * 4, True)], "before the header"),
        ([_header(("a", [1])), _header(("a", [1]))], "a second header"),
        ([_header(("a", [2])), _chunk(0, 4, b"\0" * 4, True)], "offset 4, but 0 bytes"),
        ([_header(("a", [1])), _chunk(0, 0, b"\0" * 8, True)], "runs past"),
        ([_header(("a", [2])), _chunk(0, 0, b"\0" * 4, True)], "last chunk ends at byte 4 of 8"),
        ([_header(("a", [1])), _chunk(5, 0, b"\0" * 4, True)], "capture id 5"),
        ([_header(("a", [1])), _chunk(0, 0, b"\0" * 4, True), _chunk(0, 4, b"", True)], "after its last chunk"),
        ([_header(("a", [1])), SUMMARY], "before tensors ['a'] were complete"),
        ([_header(("a", [1])), _chunk(0, 0, b"\0" * 4, True), SUMMARY, SUMMARY], "after the summary"),
        ([pb.RunResponse()], "no header, chunk or summary"),
    ],
)
def test_decoder_rejects_malformed_streams(messages, problem):
    decoder = RunStreamDecoder()
    with pytest.raises(glassbox.MalformedStream) as error:
        for message in messages:
            decoder.feed(message)
    assert problem in error.value.message
    assert isinstance(error.value, glassbox.GlassboxError)
    assert error.value.code.name == "INTERNAL"


def test_decoder_rejects_bad_headers_and_early_ends():
    bad = _header(("a", [2]))
    bad.header.tensors[0].nbytes = 4
    with pytest.raises(glassbox.MalformedStream, match="needs 8"):
        RunStreamDecoder().feed(bad)
    decoder = RunStreamDecoder()
    decoder.feed(_header(("a", [1])))
    with pytest.raises(glassbox.MalformedStream, match="without a summary"):
        decoder.finish()
