// Package jobs runs offline batch predictions: a file of inputs, one per
// line (JSON, or CSV rows of numbers), streamed through an app's model at
// the lowest priority class (dispatch.Background), so that the job takes
// only the capacity online queries leave, in the largest batches the
// replicas take.
//
// # Order and counts
//
// Output lines keep the input's line numbers and order: each is
// {"line": N, "output": ...} on the output file; a line that fails (not
// JSON, not numbers, refused by the app's input type or by the model) is
// {"line": N, "error": "..."} on the errors file. Every input line ends on
// exactly one of the two, so lines read = written + failed, always.
//
// # Checkpoints and restarts
//
// A job's record (Job) lives in a Store: the data directory's bbolt file
// next to the state, or Redis. The runner writes whole chunks of lines
// in input order and, about once a second, flushes and syncs both files
// and then records the checkpoint: the input's byte offset and line count
// and both files' sizes, all after the same last line. A proxy that
// restarts (after a crash too) resumes every job recorded as running: it
// truncates both files to the checkpoint's sizes, dropping whatever was
// written after it, and reads on from the checkpoint's offset. A line
// written after the last checkpoint is therefore written again, once,
// after the truncation: the files never hold a line twice nor miss one.
// A file shorter than its checkpoint (changed by someone else) fails the
// job rather than guess.
//
// # Lifecycle
//
// Manager owns the runners: Start resumes the running jobs, Create starts
// a new one, Cancel stops one for good, Close stops all of them at their
// last whole chunk and checkpoints them, still running, for the next
// start.
package jobs
