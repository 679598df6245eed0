import { METER_NAME } from '@connguard/opentelemetry'
import type { Attributes } from '@opentelemetry/api'
import {
  AggregationTemporality,
  type DataPoint,
  InMemoryMetricExporter,
  MeterProvider,
  type MetricData,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics'

/**
 * A MeterProvider whose `collect()` flushes through a periodic reader into memory
 * (cumulative) and returns connguard's metrics. The interval never fires during a test:
 * collections are the explicit flushes. The provider's shutdown goes on `cleanups`.
 */
export function otelSdk(cleanups: (() => Promise<void> | void)[]): {
  provider: MeterProvider
  collect(): Promise<MetricData[]>
} {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 })
  const provider = new MeterProvider({ readers: [reader] })
  cleanups.push(() => provider.shutdown())
  return {
    provider,
    async collect(): Promise<MetricData[]> {
      exporter.reset()
      await reader.forceFlush()
      const last = exporter.getMetrics().at(-1)
      return (last?.scopeMetrics ?? [])
        .filter((s) => s.scope.name === METER_NAME)
        .flatMap((s) => s.metrics)
    },
  }
}

/** Exactly the same attributes, in any order. */
export const sameAttributes = (a: Attributes, b: Attributes): boolean => {
  const keys = Object.keys(a)
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k])
}

/** The data points of `name` (none when the instrument is absent). */
export const pointsOf = <T = unknown>(all: readonly MetricData[], name: string): DataPoint<T>[] =>
  (all.find((m) => m.descriptor.name === name)?.dataPoints ?? []) as DataPoint<T>[]
