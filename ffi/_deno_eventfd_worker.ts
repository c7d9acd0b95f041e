/**
 * Entry point of the Deno eventfd watcher thread (see `_deno_eventfd_watcher.ts`).
 *
 * @module
 */
import { workerData } from "node:worker_threads";
import { native } from "./deno.ts";
import { runWatcher, type WatcherData } from "./_deno_eventfd_watcher.ts";

runWatcher(native, workerData as WatcherData);
