// The demo's pods: which example workload each one runs, its address, and the Pod objects the
// manifests source needs (examples/ only has Deployments, which that source ignores).
import { stringify } from 'yaml';
import type { WorkloadKind } from './servers.ts';

/** One demo pod: labels match the example Deployment's pod template, so its Service selects it. */
export interface DemoPod {
  name: string;
  /** The `app` label of the example Deployment it stands in for. */
  app: string;
  kind: WorkloadKind;
  /** Container port (the Service's targetPort) and its name. */
  port: number;
  portName: string;
  ip: string;
}

/** The example namespace every demo object lives in. */
export const DEMO_NAMESPACE = 'edgemesh-test';

const layout: Array<Omit<DemoPod, 'name' | 'ip'> & { replicas: number }> = [
  { app: 'hostname-edge', kind: 'hostname', port: 9376, portName: 'http-0', replicas: 1 },
  { app: 'hostname-lb-edge', kind: 'hostname', port: 9376, portName: 'http-0', replicas: 3 },
  { app: 'tcp-echo-edge', kind: 'tcp-echo', port: 2701, portName: 'tcp-0', replicas: 1 },
  { app: 'websocket-edge', kind: 'websocket', port: 8080, portName: 'websocket-0', replicas: 1 },
];

/** The demo pods, the i-th (0-based) getting address `ipOf(i)`. */
export function demoPods(ipOf: (i: number) => string): DemoPod[] {
  const pods: DemoPod[] = [];
  for (const { replicas, ...w } of layout)
    for (let r = 0; r < replicas; r++) pods.push({ ...w, name: `${w.app}-${r}`, ip: ipOf(pods.length) });
  return pods;
}

/** Multi-document YAML with one running, ready Pod object per demo pod. */
export function podManifests(pods: readonly DemoPod[], nodeName: string, hostIP: string): string {
  return pods
    .map((p) =>
      stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: p.name, namespace: DEMO_NAMESPACE, labels: { app: p.app } },
        spec: {
          nodeName,
          containers: [
            {
              name: p.kind,
              image: `edgemesh-demo/${p.kind}`,
              ports: [{ name: p.portName, containerPort: p.port, protocol: 'TCP' }],
            },
          ],
        },
        status: {
          phase: 'Running',
          hostIP,
          podIP: p.ip,
          podIPs: [{ ip: p.ip }],
          conditions: [{ type: 'Ready', status: 'True' }],
        },
      }),
    )
    .join('---\n');
}
