"""Engine links: one TCP connection from a gateway replica to an engine replica that
carries every request between them and every event of their replies.

Ray Serve places the engine replicas, health-checks, replaces and scales them; it does not
carry their requests. A Serve handle call cost 3.4 ms here before the engine saw the request,
and a Ray message per streamed event held the engine-deployment endpoint to half of bare
vLLM's throughput at 16 concurrent streams (benchmarks/overhead.py). On the link a request is
one frame, an event is one frame, and every frame one side has ready in a turn of its event
loop leaves in one write.

Frames: kind (1 byte), stream id (4 bytes, chosen by the gateway per link), payload length
(4 bytes), payload. A link starts with a mutual challenge: each side proves it holds the
platform's link secret (HMAC-SHA256 over the other's fresh nonce), so a stranger who reaches
the port can neither submit requests nor pose as an engine and read them.
"""

from serving.targets.links.engine_end import LinkServer
from serving.targets.links.frames import LinkBroken, LinkRefused
from serving.targets.links.gateway_end import GatewayLink, LinkStream, connect

__all__ = ["GatewayLink", "LinkBroken", "LinkRefused", "LinkServer", "LinkStream", "connect"]
