#!/usr/bin/env node
// The `edgemesh` executable: registers the TypeScript loader (tsx) relative to this file, so the
// command works from any directory, then runs the CLI from source.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./main.ts');
process.exitCode = await main(process.argv.slice(2));
