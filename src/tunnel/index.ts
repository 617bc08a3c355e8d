// The tunnel module's entry point, imported only when modules.edgeTunnel is enabled (or by the relay).
export { EdgeTunnel, type PeerPath, type TunnelStatus } from './edge-tunnel.ts';
export { RelayServer } from './relay-server.ts';
