"""Client: a connection to one Glassbox server."""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple, Union

import grpc

from ._errors import from_rpc_error
from ._model import Model
from ._saes import SaeInfo
from ._proto.glassbox.v1 import glassbox_pb2 as pb
from ._proto.glassbox.v1 import glassbox_pb2_grpc as pb_grpc
from ._types import CachedRun, ModelInfo

# Tensor chunks are 1 MiB by default, but a request may ask for larger ones.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]


class Client:
    """A connection to a Glassbox server; create it with ``glassbox.connect``.

    Use it as a context manager, or call ``close()``, to release the channel.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        metadata: Tuple[Tuple[str, str], ...] = (),
        timeout: Optional[float] = None,
        address: str = "",
    ) -> None:
        self._channel = channel
        self._stub = pb_grpc.GlassboxStub(channel)
        self._metadata = metadata
        self.timeout = timeout
        self.address = address

    def models(self) -> List[ModelInfo]:
        """The models the server serves (``hook_points`` empty; see ``model_info``)."""
        response = self._unary("ListModels", pb.ListModelsRequest())
        return [ModelInfo._from_proto(m) for m in response.models]

    def model_info(self, name: str) -> ModelInfo:
        """Full information about one model, hook points included. Unknown name: NotFound."""
        return ModelInfo._from_proto(self._unary("GetModelInfo", pb.GetModelInfoRequest(model=name)))

    def saes(self) -> List[SaeInfo]:
        """Every SAE the server holds, whichever model it is attached to."""
        return [SaeInfo._from_proto(s) for s in self._unary("ListSaes", pb.ListSaesRequest()).saes]

    def cached_runs(self) -> List[CachedRun]:
        """The runs kept on the server (``Model.run(..., cache_as=NAME)``), by name. Budgets are
        the server's (--cache_max_bytes / --cache_max_entries), shared by all clients until the
        server authenticates with API keys."""
        response = self._unary("ListCachedRuns", pb.ListCachedRunsRequest())
        return [CachedRun._from_proto(r) for r in response.runs]

    def release_cached_run(self, name: str) -> int:
        """Frees a cached run now; returns its bytes. ``glassbox.NotFound`` when it expired or
        never existed."""
        return int(self._unary("ReleaseCachedRun", pb.ReleaseCachedRunRequest(name=name)).released_bytes)

    def model(self, name: str) -> Model:
        """A handle on one model. Unknown name: NotFound."""
        return Model(self, self.model_info(name))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"glassbox.Client({self.address!r})"

    def _unary(self, method: str, request: Any, timeout: Optional[float] = None) -> Any:
        try:
            return getattr(self._stub, method)(
                request,
                timeout=timeout if timeout is not None else self.timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def _stream(self, method: str, request: Any, timeout: Optional[float] = None) -> Any:
        # Streaming calls report errors while being iterated; RunStream converts them.
        return getattr(self._stub, method)(
            request,
            timeout=timeout if timeout is not None else self.timeout,
            metadata=self._metadata,
        )


def _read_certificates(value: Union[bytes, str, "os.PathLike[str]"]) -> bytes:
    if isinstance(value, bytes):
        return value
    text = os.fspath(value)
    if "-----BEGIN" in text:
        return text.encode()
    with open(text, "rb") as f:
        return f.read()


def connect(
    address: str,
    api_key: Optional[str] = None,
    tls: bool = False,
    root_certificates: Union[None, bytes, str, "os.PathLike[str]"] = None,
    timeout: Optional[float] = None,
) -> Client:
    """Opens a connection to a Glassbox server at ``address`` ("host:port").

    Args:
        address: the server's "host:port".
        api_key: sent as ``authorization: Bearer <api_key>`` on every call.
        tls: use TLS (implied by ``root_certificates``); the system's roots verify the server
            unless ``root_certificates`` is given.
        root_certificates: PEM bytes, PEM text, or a path to a PEM file.
        timeout: default deadline in seconds for every call (None: no deadline).

    The channel connects lazily: an unreachable server shows up as ``Unavailable`` on the
    first call.
    """
    if root_certificates is not None:
        tls = True
    if tls:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read_certificates(root_certificates) if root_certificates is not None else None
        )
        channel = grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)
    else:
        channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
    metadata: Tuple[Tuple[str, str], ...] = ()
    if api_key is not None:
        metadata = (("authorization", f"Bearer {api_key}"),)
    return Client(channel, metadata, timeout, address)
