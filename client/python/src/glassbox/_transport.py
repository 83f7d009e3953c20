"""Transport: the Glassbox service's RPCs as typed methods over one gRPC channel.

It owns the channel, the stub, the call metadata (the ``authorization`` header) and the default
deadline, and it is the one place where ``grpc.RpcError`` becomes a ``GlassboxError``: when a
unary call fails, and while a server stream is iterated.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Optional, Protocol, Tuple, TypeVar, Union

import grpc

from ._errors import from_rpc_error
from ._proto.glassbox.v1 import glassbox_pb2 as pb
from ._proto.glassbox.v1 import glassbox_pb2_grpc as pb_grpc

Metadata = Tuple[Tuple[str, str], ...]
Response = TypeVar("Response")
#: PEM bytes, PEM text, or the path of a PEM file.
Certificates = Union[bytes, str, "os.PathLike[str]"]

# Tensor chunks are 1 MiB by default, but a request may ask for larger ones.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]


def _read_certificates(value: Certificates) -> bytes:
    if isinstance(value, bytes):
        return value
    text = os.fspath(value)
    if "-----BEGIN" in text:
        return text.encode()
    with open(text, "rb") as f:
        return f.read()


def open_channel(
    address: str,
    tls: bool = False,
    root_certificates: Optional[Certificates] = None,
    certificate_chain: Optional[Certificates] = None,
    private_key: Optional[Certificates] = None,
) -> grpc.Channel:
    """A channel to ``address`` ("host:port"): TLS verified by ``root_certificates`` (None: the
    system's roots) when ``tls``, else plaintext; ``certificate_chain`` and ``private_key`` (both
    or neither) are the client certificate a mutual-TLS server asks for. It connects lazily, on
    the first call."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("a client certificate needs both certificate_chain and private_key")
    if not tls:
        return grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read_certificates(root_certificates) if root_certificates is not None else None,
        private_key=_read_certificates(private_key) if private_key is not None else None,
        certificate_chain=_read_certificates(certificate_chain) if certificate_chain is not None else None,
    )
    return grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)


def bearer_metadata(api_key: Optional[str]) -> Metadata:
    """The call metadata that authenticates with ``api_key``: ``authorization: Bearer <key>``."""
    return () if api_key is None else (("authorization", f"Bearer {api_key}"),)


class ServerStream(Iterator[Response]):
    """The responses of a server-streaming call. A failure arrives as a GlassboxError from
    ``next()``; ``cancel()`` ends the call on the server."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> "ServerStream[Response]":
        return self

    def __next__(self) -> Response:
        try:
            return next(self._call)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def cancel(self) -> None:
        self._call.cancel()


class Transport:
    """One method per RPC of glassbox.v1.Glassbox, each taking the request message and
    returning the response (an iterator of them for the streaming ``run``, ``generate`` and
    ``watch_job``).

    ``timeout`` is the default deadline in seconds (None: none); a call's ``timeout=`` overrides
    it. ``metadata`` goes with every call.
    """

    def __init__(self, channel: grpc.Channel, metadata: Metadata = (), timeout: Optional[float] = None) -> None:
        self._channel = channel
        self._stub = pb_grpc.GlassboxStub(channel)
        self.metadata = metadata
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Callable[..., Any], request: Any, timeout: Optional[float]) -> Any:
        return method(request, timeout=self.timeout if timeout is None else timeout, metadata=self.metadata)

    def _unary(self, method: Callable[..., Any], request: Any, timeout: Optional[float]) -> Any:
        try:
            return self._call(method, request, timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    # ---- models and tokens ----

    def list_models(self, request: pb.ListModelsRequest, *, timeout: Optional[float] = None) -> pb.ListModelsResponse:
        return self._unary(self._stub.ListModels, request, timeout)

    def get_model_info(self, request: pb.GetModelInfoRequest, *, timeout: Optional[float] = None) -> pb.ModelInfo:
        return self._unary(self._stub.GetModelInfo, request, timeout)

    def tokenize(self, request: pb.TokenizeRequest, *, timeout: Optional[float] = None) -> pb.TokenizeResponse:
        return self._unary(self._stub.Tokenize, request, timeout)

    def detokenize(self, request: pb.DetokenizeRequest, *, timeout: Optional[float] = None) -> pb.DetokenizeResponse:
        return self._unary(self._stub.Detokenize, request, timeout)

    # ---- runs ----

    def run(self, request: pb.RunRequest, *, timeout: Optional[float] = None) -> ServerStream[pb.RunResponse]:
        # A streaming call reports its errors while it is iterated; ServerStream converts them.
        return ServerStream(self._call(self._stub.Run, request, timeout))

    def generate(
        self, request: pb.GenerateRequest, *, timeout: Optional[float] = None
    ) -> ServerStream[pb.GenerateResponse]:
        return ServerStream(self._call(self._stub.Generate, request, timeout))

    def list_cached_runs(
        self, request: pb.ListCachedRunsRequest, *, timeout: Optional[float] = None
    ) -> pb.ListCachedRunsResponse:
        return self._unary(self._stub.ListCachedRuns, request, timeout)

    def release_cached_run(
        self, request: pb.ReleaseCachedRunRequest, *, timeout: Optional[float] = None
    ) -> pb.ReleaseCachedRunResponse:
        return self._unary(self._stub.ReleaseCachedRun, request, timeout)

    def get_queue(self, request: pb.GetQueueRequest, *, timeout: Optional[float] = None) -> pb.GetQueueResponse:
        return self._unary(self._stub.GetQueue, request, timeout)

    # ---- analyses ----

    def patching_sweep(
        self, request: pb.PatchingSweepRequest, *, timeout: Optional[float] = None
    ) -> pb.PatchingSweepResponse:
        return self._unary(self._stub.PatchingSweep, request, timeout)

    def logit_lens(self, request: pb.LogitLensRequest, *, timeout: Optional[float] = None) -> pb.LogitLensResponse:
        return self._unary(self._stub.LogitLens, request, timeout)

    def gradients(self, request: pb.GradientsRequest, *, timeout: Optional[float] = None) -> pb.GradientsResponse:
        return self._unary(self._stub.Gradients, request, timeout)

    def integrated_gradients(
        self, request: pb.IntegratedGradientsRequest, *, timeout: Optional[float] = None
    ) -> pb.IntegratedGradientsResponse:
        return self._unary(self._stub.IntegratedGradients, request, timeout)

    def jacobian(self, request: pb.JacobianRequest, *, timeout: Optional[float] = None) -> pb.JacobianResponse:
        return self._unary(self._stub.Jacobian, request, timeout)

    def direct_logit_attribution(
        self, request: pb.DirectLogitAttributionRequest, *, timeout: Optional[float] = None
    ) -> pb.DirectLogitAttributionResponse:
        return self._unary(self._stub.DirectLogitAttribution, request, timeout)

    def attention_norms(
        self, request: pb.AttentionNormsRequest, *, timeout: Optional[float] = None
    ) -> pb.AttentionNormsResponse:
        return self._unary(self._stub.AttentionNorms, request, timeout)

    # ---- sparse autoencoders ----

    def list_saes(self, request: pb.ListSaesRequest, *, timeout: Optional[float] = None) -> pb.ListSaesResponse:
        return self._unary(self._stub.ListSaes, request, timeout)

    def sae_encode(self, request: pb.SaeEncodeRequest, *, timeout: Optional[float] = None) -> pb.SaeEncodeResponse:
        return self._unary(self._stub.SaeEncode, request, timeout)

    def sae_decode(self, request: pb.SaeDecodeRequest, *, timeout: Optional[float] = None) -> pb.SaeDecodeResponse:
        return self._unary(self._stub.SaeDecode, request, timeout)

    # ---- dataset scans (jobs) ----

    def start_scan(self, request: pb.StartScanRequest, *, timeout: Optional[float] = None) -> pb.JobInfo:
        return self._unary(self._stub.StartScan, request, timeout)

    def watch_job(self, request: pb.WatchJobRequest, *, timeout: Optional[float] = None) -> ServerStream[pb.JobInfo]:
        return ServerStream(self._call(self._stub.WatchJob, request, timeout))

    def cancel_job(self, request: pb.CancelJobRequest, *, timeout: Optional[float] = None) -> pb.JobInfo:
        return self._unary(self._stub.CancelJob, request, timeout)

    def list_jobs(self, request: pb.ListJobsRequest, *, timeout: Optional[float] = None) -> pb.ListJobsResponse:
        return self._unary(self._stub.ListJobs, request, timeout)

    def get_scan_results(
        self, request: pb.GetScanResultsRequest, *, timeout: Optional[float] = None
    ) -> pb.ScanResults:
        return self._unary(self._stub.GetScanResults, request, timeout)

    def score_explanation(
        self, request: pb.ScoreExplanationRequest, *, timeout: Optional[float] = None
    ) -> pb.ScoreExplanationResponse:
        return self._unary(self._stub.ScoreExplanation, request, timeout)


class HasTransport(Protocol):
    """What a Model is made from: a Client, or anything else that holds a Transport."""

    transport: Transport
