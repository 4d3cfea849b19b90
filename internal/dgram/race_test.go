//go:build race

package dgram

// sync.Pool drops items at random under the race detector.
const raceEnabled = true
