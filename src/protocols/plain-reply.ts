// The short text answers the HTTP engine and the ingress gateway give themselves (4xx/5xx with a
// reason), written the same way by both.
import type http from 'node:http';

/** Answers `status` with `text` as text/plain; when headers already went out, the response is cut instead. */
export function plainReply(res: http.ServerResponse, status: number, text: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `${text}\n`;
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}
