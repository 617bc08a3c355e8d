// Kubernetes object fixtures for the manifests source in e2e tests: one Pod and one Service
// template, so every test writes the same shape and differs only in names and addresses.

/** A running Pod whose `status.podIP` the controller turns into an endpoint. */
export interface PodFixture {
  name: string;
  namespace: string;
  /** Value of the `app` label the Service selects. */
  app: string;
  ip: string;
  /** `spec.nodeName` (tunnel tests: which node the endpoint lives on). */
  nodeName?: string;
}

/** One Service port; the name's prefix selects the protocol (DESIGN.md §3). */
export interface ServicePortFixture {
  name: string;
  port: number;
  targetPort: number | string;
  protocol?: 'TCP' | 'UDP';
}

/** A ClusterIP Service selecting `app`. */
export interface ServiceFixture {
  name: string;
  namespace: string;
  clusterIP: string;
  app: string;
  ports: ServicePortFixture[];
}

/** The Pod as one YAML document. */
export function podManifest(p: PodFixture): string {
  const node = p.nodeName === undefined ? '' : `nodeName: ${p.nodeName}, `;
  return `
apiVersion: v1
kind: Pod
metadata: { name: ${p.name}, namespace: ${p.namespace}, labels: { app: ${p.app} } }
spec: { ${node}containers: [{ name: c, image: x }] }
status: { podIP: ${p.ip}, phase: Running }
`;
}

/** The Service as one YAML document. */
export function serviceManifest(s: ServiceFixture): string {
  const ports = s.ports.map(
    (p) =>
      `    - { name: ${p.name}, port: ${p.port}, targetPort: ${p.targetPort}, protocol: ${p.protocol ?? 'TCP'} }`,
  );
  return `
apiVersion: v1
kind: Service
metadata: { name: ${s.name}, namespace: ${s.namespace} }
spec:
  clusterIP: ${s.clusterIP}
  selector: { app: ${s.app} }
  ports:
${ports.join('\n')}
`;
}
