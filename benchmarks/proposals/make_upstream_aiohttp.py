"""Regenerate `upstream_aiohttp.py` from the current `gguf_mcp/upstream.py`.

`gguf_mcp/upstream.py` keeps changing; the aiohttp proposal is the same handful of edits to
whatever it is (the client calls, the exception types, the response close), so it is derived
rather than hand-kept. Fails loudly when an edit no longer applies (then update the pairs here).

    .venv/bin/python benchmarks/proposals/make_upstream_aiohttp.py && diff -u gguf_mcp/upstream.py \
        benchmarks/proposals/upstream_aiohttp.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "gguf_mcp" / "upstream.py"
TARGET = Path(__file__).with_name("upstream_aiohttp.py")

HEADER = "# ruff: noqa: RUF100  (only while this file lives in benchmarks/, where S311 is off; drop when applied)\n"
HELPERS = '''# What aiohttp raises for a failed request or body; mapped to httpx's types by `_as_httpx`.
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)


def _as_httpx(exc: BaseException) -> httpx.TransportError:
    """The httpx exception `gguf_mcp.errors` words the same way as this aiohttp one."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(text)
    if isinstance(exc, TimeoutError):  # SocketTimeoutError: nothing read for `sock_read` seconds
        return httpx.ReadTimeout(text)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(text)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.ReadError(text)
    return httpx.RemoteProtocolError(text)


def _stale(exc: BaseException) -> bool:
    """A kept-alive connection the server had closed, found while sending: no answer was started.

    llama-server closes one after every streamed answer and after 100 requests without saying so;
    aiohttp (unlike httpcore) does not poll the socket before reusing it, so the next request
    fails at once with "Can not write request body" (ClientOSError) or ServerDisconnectedError.
    """
    return isinstance(exc, aiohttp.ServerDisconnectedError) or (
        isinstance(exc, aiohttp.ClientOSError) and not isinstance(exc, aiohttp.ClientConnectorError)
    )


class UpstreamClient:'''

# (pattern, replacement, expected count); patterns are regular expressions.
EDITS: list[tuple[str, str, int]] = [
    (
        r'(""")HTTP to the deployments: one pooled client, the right auth per protocol, one retry policy\.\n',
        r"\1HTTP to the deployments: one pooled client, the right auth per protocol, one retry policy.\n\n"
        "The client is aiohttp: per request it costs a third of httpx's CPU (benchmarks/http_clients.py).\n"
        "httpx stays for its exception types, which `gguf_mcp.errors` words; aiohttp's are mapped to\n"
        "them here (`_as_httpx`).\n",
        1,
    ),
    (r"\nimport anyio\nimport httpx\n", "\nimport aiohttp\nimport anyio\nimport httpx\n", 1),
    (r"\nclass UpstreamClient:", "\n" + HELPERS.replace("\\", "\\\\"), 1),
    (r"http: httpx\.AsyncClient,", "http: aiohttp.ClientSession,", 1),
    (r"response: httpx\.Response", "response: aiohttp.ClientResponse", 3),
    (r"-> httpx\.Response:", "-> aiohttp.ClientResponse:", 1),
    (
        r"        except httpx\.TransportError as exc:\n"
        r"            raise stream_broken\(dep\.name, exc, self\._timeout\) from None\n"
        r"        finally:\n            with anyio\.CancelScope\(shield=True\):\n"
        r"                await response\.aclose\(\)\n",
        "        except _TRANSPORT_ERRORS as exc:\n"
        "            raise stream_broken(dep.name, _as_httpx(exc), self._timeout) from None\n"
        "        finally:\n"
        "            # Read to the end: back to the pool. Cut short (cancelled, deadline, error): closing\n"
        "            # the connection is what makes llama-server stop generating.\n"
        "            if final:\n"
        "                response.release()\n"
        "            else:\n"
        "                response.close()\n",
        1,
    ),
    (
        r"            request = self\._http\.build_request\(method, url, content=content, headers=headers\)\n"
        r"            try:\n                response = await self\._http\.send\(request, stream=True\)\n"
        r"            except httpx\.RemoteProtocolError as exc:\n(?:                #.*\n)+"
        r'                if not resent_stale and "without sending a response" in str\(exc\):\n',
        "            try:\n"
        "                response = await self._http.request(method, url, data=content, headers=headers)\n"
        "            except _TRANSPORT_ERRORS as exc:\n"
        "                # llama-server closes kept-alive connections (after a streamed answer, after 100\n"
        "                # requests) without saying so; found while sending: resend once, at once. Only\n"
        "                # then: a request whose answer had started may have run on the GPU.\n"
        "                if not resent_stale and _stale(exc):\n",
        1,
    ),
    (
        r"                error: UpstreamError = error_for_transport\(dep\.name, dep\.base_url, exc, self\._timeout\)\n"
        r"            except httpx\.TransportError as exc:\n"
        r"                error = error_for_transport\(dep\.name, dep\.base_url, exc, self\._timeout\)\n"
        r"            else:\n                if response\.status_code < 400:\n",
        "                error: UpstreamError = error_for_transport("
        "dep.name, dep.base_url, _as_httpx(exc), self._timeout)\n"
        "            else:\n"
        "                if log.isEnabledFor(logging.DEBUG):  # httpx logged requests; say what aiohttp got\n"
        '                    log.debug("%s %s: HTTP %d %s", method, url, response.status, '
        "list(response.headers.items()))\n"
        "                if response.status < 400:\n",
        1,
    ),
    (
        r"                except httpx\.TransportError:\n                    body_bytes = b\"\"\n"
        r"                finally:\n                    await response\.aclose\(\)\n",
        '                except _TRANSPORT_ERRORS:\n                    body_bytes = b""\n'
        "                finally:\n                    response.close()\n",
        1,
    ),
    (r"response\.status_code,", "response.status,", 1),
    (r"response\.aiter_bytes\(\)", "response.content.iter_any()", 2),
    (
        r"        try:\n            content = await self\._read\(dep, response, MAX_BODY\)\n"
        r"        except httpx\.TransportError as exc:\n"
        r"            raise (\w+)\(dep\.name, (dep\.base_url, )?exc, self\._timeout\) from None\n"
        r"        finally:\n            await response\.aclose\(\)\n",
        "        complete = False\n"
        "        try:\n"
        "            content = await self._read(dep, response, MAX_BODY)\n"
        "            complete = True\n"
        "        except _TRANSPORT_ERRORS as exc:\n"
        r"            raise \1(dep.name, \2_as_httpx(exc), self._timeout) from None" + "\n"
        "        finally:\n"
        "            if complete:\n"
        "                response.release()\n"
        "            else:\n"
        "                response.close()\n",
        1,
    ),
    (
        r'    """The process-wide pooled client: opened in the server lifespan, closed at shutdown\."""\n'
        r"    timeout = httpx\.Timeout\(.*\)\n    limits = httpx\.Limits\(.*\)\n"
        r"    async with httpx\.AsyncClient\(.*\) as http:\n",
        '    """The process-wide pooled session: opened in the server lifespan, closed at shutdown."""\n'
        "    # connect: waiting for a pooled connection plus connecting; sock_read: the read time-out.\n"
        "    # aiohttp has no write time-out; a request body is one small JSON document.\n"
        "    timeout = aiohttp.ClientTimeout(total=None, connect=30.0, sock_connect=10.0, sock_read=settings.timeout)\n"
        "    connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=30.0)\n"
        "    async with aiohttp.ClientSession("
        'connector=connector, timeout=timeout, headers={"user-agent": USER_AGENT}) as http:\n',
        1,
    ),
]


def main() -> int:
    text = SOURCE.read_text()
    for pattern, replacement, count in EDITS:
        found = len(re.findall(pattern, text))
        if found != count:
            print(f"{pattern[:70]!r}: {found} matches, expected {count}; update EDITS", file=sys.stderr)
            return 1
        text = re.sub(pattern, replacement, text)
    if "httpx.Response" in text or "aclose" in text or "build_request" in text:
        print("httpx response handling left over; update EDITS", file=sys.stderr)
        return 1
    TARGET.write_text(HEADER + text)
    print(f"wrote {TARGET.relative_to(ROOT)} from {SOURCE.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
