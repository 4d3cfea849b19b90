package transport

import (
	"fmt"
	"strconv"
)

// Rate is the [kcp] rate_mbit setting: RateAuto (written "auto", the
// default) lets the session's controller find the path's rate, a positive
// number paces the data, with its FEC parity, at that many Mbit/s, and 0
// sends unpaced.
type Rate int

// RateAuto is rate_mbit = "auto".
const RateAuto Rate = -1

// String is the setting as written in a config file.
func (r Rate) String() string {
	if r == RateAuto {
		return "auto"
	}
	return strconv.Itoa(int(r))
}

// UnmarshalTOML takes a number of Mbit/s or the string "auto".
func (r *Rate) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 || v > maxRateMbit {
			return fmt.Errorf("%d is out of range 0-%d, or \"auto\" (0 sends unpaced)", v, maxRateMbit)
		}
		*r = Rate(v)
		return nil
	case string:
		if v == "auto" {
			*r = RateAuto
			return nil
		}
		return fmt.Errorf("%q is not \"auto\" or a number of Mbit/s", v)
	}
	return fmt.Errorf("%v is not \"auto\" or a whole number of Mbit/s", v)
}
