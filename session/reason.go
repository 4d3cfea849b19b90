package session

import (
	"errors"
	"log/slog"
)

// EndReason says in a few words why a relayed connection ended, and at what
// log level: a clean close is routine (debug); anything else (the far side
// aborted, say because its target refused, a reset, the session ending) is
// worth an info line.
func EndReason(err error, s *Session) (slog.Level, string) {
	var ab *AbortError
	switch {
	case err == nil:
		return slog.LevelDebug, "closed"
	case errors.As(err, &ab):
		return slog.LevelInfo, err.Error()
	case errors.Is(err, ErrTruncated) && s.Err() != nil:
		return slog.LevelInfo, "session ended: " + s.Err().Error()
	}
	return slog.LevelInfo, err.Error()
}
