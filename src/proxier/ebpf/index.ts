// The eBPF interception feature, loaded only when `--intercept ebpf|auto` asks for it.

export { createEbpfInterceptor, type EbpfChoiceOptions } from './create-ebpf-interceptor.ts';
export {
  DEFAULT_CGROUP_FALLBACK,
  DEFAULT_PIN_DIR,
  type EbpfCounters,
  EbpfInterceptor,
  type EbpfInterceptorOptions,
  resolveCgroupPath,
} from './ebpf-interceptor.ts';
export { type EbpfProbe, findBpfObjects, probeEbpf } from './probe.ts';
export { type EbpfServiceEntry, renderSocketLb } from './render-socket-lb.ts';
