package logic

import (
	"regexp"
	"unicode"
	"unicode/utf8"
)

// validUsername: 3–20 characters of ASCII letters, digits, '_', '-', or CJK (Han, kana, Hangul).
func validUsername(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	n := utf8.RuneCountInString(s)
	if n < 3 || n > 20 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
		case unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul):
		default:
			return false
		}
	}
	return true
}

func validPassword(s string) bool {
	n := utf8.RuneCountInString(s)
	return utf8.ValidString(s) && n >= 6 && n <= 50
}

var (
	singleIDRe = regexp.MustCompile(`^single_[0-9a-f]{16}$`)
	groupIDRe  = regexp.MustCompile(`^group_[1-9][0-9]{0,19}$`)
)

// validConversationID accepts the three shapes of contract.md §1.
func validConversationID(id string) bool {
	return id == WorldID || singleIDRe.MatchString(id) || groupIDRe.MatchString(id)
}

// WorldID is the one public room every user can read and post in.
const WorldID = "world"
