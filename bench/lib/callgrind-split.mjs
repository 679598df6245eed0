/**
 * What a callgrind dump of a Node process spent on V8 itself rather than on the program:
 * optimising and lazy compiles (Maglev, TurboFan, the parser; `--single-threaded` runs them
 * on the main thread, at the call that triggers them), deoptimisations and garbage collection
 * (scavenges, full collections, and the incremental marking and sweeping steps that run between
 * them, from allocations and from V8's foreground tasks). Each lands in whichever interval its
 * trigger falls in: a TurboFan compile of one large function costs up to ~700M instructions,
 * 200k a request over a 3,000-request interval, and the marking steps of one full collection
 * ~60M (measured, Node 24 and 26). Without them, the program's own work per request moves by
 * hundreds of instructions from one interval to the next where the totals move by tens of
 * thousands.
 *
 * How: every function's self cost is read from the dump and classed by its name (V8's compiler
 * and heap namespaces). A helper without a class of its own (memset, malloc, a hash table) is
 * shared out among its callers by what each call cost, so the memory a compile clears goes
 * with the compile. Self costs never overlap: nothing is counted twice, whichever way the
 * entry points nest (an earlier version summed the inclusive costs of two entry points, and
 * missed the marking steps, which run outside the collection's pause).
 */
import { readFileSync } from 'node:fs'

/** V8's compilers, their parser and code objects, and deoptimisation. */
const JIT =
  /v8::internal::compiler|turboshaft|v8::internal::maglev::|Maglev|v8::internal::Compiler::|v8::internal::\(anonymous namespace\)::(GetOrCompileOptimized|CompileOptimized|CompileMaglev)|Runtime_CompileLazy|Runtime_Optimize|Runtime_CompileOptimized|Runtime_CompileBaseline|Runtime_InstallBaselineCode|Deoptimizer|Runtime_NotifyDeoptimized|v8::internal::Zone|v8::internal::Parser|v8::internal::Scanner|v8::internal::interpreter::|v8::internal::baseline::|CompilationJob|OptimizedCompilationInfo|v8::internal::Assembler|v8::internal::MacroAssembler|RelocInfo|FrameTranslationBuilder|v8::internal::Ast|SourcePositionTable|v8::internal::CodeDesc|v8::internal::Factory::CodeBuilder|v8::internal::JSHeapBroker|v8::internal::DeoptimizationData/

/**
 * V8's heap: collections, marking, sweeping, evacuation, their visitors and tasks, and the write
 * barrier (`RecordWrite`: it records old-to-new pointers for the scavenger, and marks while a
 * full collection is marking: Node 26 Fastify, ~1.2k instructions a request, 2.6k in an
 * interval where marking ran).
 */
const GC =
  /Scaveng|Marking|MarkCompact|Sweeper|Evacuat|heap::base::|cppgc::|RememberedSet|SlotSet|PointersUpdating|IterateBody|IteratePointers|BodyDescriptor|HeapVisitor|MinorMark|IterateObjectCache|v8::internal::Heap::|Worklist|SemiSpace|PagedSpace|LargeObjectSpace|FreeList|MemoryAllocator|PageMetadata|MutablePage|WeakObjects|ClearNonLive|OnMoveEvent|PointerTable|StringTableCleaner|RecordMigrated|Compactor|GCTracer|ArrayBufferSweeper|GlobalHandles::|LiveObjectVisitor|RootMarking|HeapObject::SizeFromMap|IncrementalMarking|MinorGC|ScavengeJob|MemoryReducer|Builtins_RecordWrite|RelocIterator|VisitRelocInfo|IsOptimizationRequested|NeedsResetDueToFlushedBytecode/

/** 'jit', 'gc' or null (the program's work) for a function name of the dump. */
function classOf(name) {
  if (JIT.test(name)) return 'jit'
  if (GC.test(name)) return 'gc'
  return null
}

/**
 * Reads a callgrind dump (one event, `Ir`; `--dump-instr=no`): its total, and what of it went to
 * compiles (`jit`) and collections (`gc`); `work` is the rest.
 */
export function splitDump(file) {
  const text = readFileSync(file, 'utf8')
  // Names are compressed: `(id) name` the first time, `(id)` after.
  const names = new Map()
  const nameOf = (token) => {
    const m = /^\((\d+)\)(?: (.*))?$/.exec(token)
    if (m === null) return token
    if (m[2] !== undefined) names.set(m[1], m[2])
    return names.get(m[1]) ?? ''
  }
  const self = new Map()
  /** callee → (caller → inclusive cost of its calls). */
  const callers = new Map()
  let total = -1
  let fn = ''
  let callee = ''
  let call = false
  for (const line of text.split('\n')) {
    if (line.startsWith('fn=')) fn = nameOf(line.slice(3))
    else if (line.startsWith('cfn=')) callee = nameOf(line.slice(4))
    else if (line.startsWith('calls=')) call = true
    else if (line.startsWith('summary:') || line.startsWith('totals:'))
      total = Number(
        line
          .slice(line.indexOf(':') + 1)
          .trim()
          .split(/\s+/)[0],
      )
    else if (/^[0-9+\-*]/.test(line)) {
      // A cost line: position, then the cost. After `calls=`, the call's inclusive cost.
      const cost = Number(line.slice(line.lastIndexOf(' ') + 1))
      if (call) {
        call = false
        let byCaller = callers.get(callee)
        if (byCaller === undefined) {
          byCaller = new Map()
          callers.set(callee, byCaller)
        }
        byCaller.set(fn, (byCaller.get(fn) ?? 0) + cost)
      } else self.set(fn, (self.get(fn) ?? 0) + cost)
    }
  }
  if (total < 0) throw new Error(`no totals in ${file}`)
  const spent = { jit: 0, gc: 0 }
  for (const [name, cost] of self) {
    const k = classOf(name)
    if (k !== null) {
      spent[k] += cost
      continue
    }
    // JIT-compiled code (an address) is the program's; a helper goes with its callers.
    const by = callers.get(name)
    if (by === undefined || name.startsWith('0x')) continue
    let all = 0
    let jit = 0
    let gc = 0
    for (const [caller, c] of by) {
      all += c
      const kc = classOf(caller)
      if (kc === 'jit') jit += c
      else if (kc === 'gc') gc += c
    }
    if (all > 0) {
      spent.jit += (cost * jit) / all
      spent.gc += (cost * gc) / all
    }
  }
  return { total, jit: spent.jit, gc: spent.gc, work: total - spent.jit - spent.gc }
}
