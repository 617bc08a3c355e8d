// A protocol handler module for data-plane tests: registers an 'http' handler that answers
// "handled <namespace/name>:<port>" itself, proving the dispatch point hands it the connection.
export function registerHandlers(register) {
  register('http', (client, service, port) => {
    client.end(`handled ${service.key}:${port.port}\n`);
  });
}
