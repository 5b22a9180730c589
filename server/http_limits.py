"""HTTP limits and timeouts that the model server and the router must agree on.

The router talks to model servers over pooled keep-alive connections, and both
face clients: a server pod is reachable directly inside the cluster, not only
through the router. So the numbers below are set once, here, and both import
them; neither side may assume the other's defaults.
"""

from __future__ import annotations

# How long the model server keeps an idle keep-alive connection open (uvicorn's timeout_keep_alive).
SERVER_KEEP_ALIVE_S = 30
# The router reuses an idle pooled connection only this long. The server's clock for the same
# idle period started earlier (when it sent the last byte), so the margin keeps the router's
# reuse clear of the server closing the connection at the same moment.
POOLED_REUSE_S = SERVER_KEEP_ALIVE_S - 2.0

# A request's head (request line and headers) may be this large in all, and carry this many
# headers; a larger one is refused with 431 before it is buffered whole. 64 KiB is about
# what common servers allow (nginx 4 x 8 KiB buffers, Node's 16 KiB, Go's 1 MiB); 100 headers
# is Apache's and Tomcat's count.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_COUNT = 100
