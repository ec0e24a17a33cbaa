package auth

import (
	"encoding/json"
	"time"
)

// Forge signs a token with arbitrary header algorithm, audience, issuer and expiry, for tests of Verify.
func (t *Tokens) Forge(alg, iss, aud, sub string, exp time.Time) string {
	a, _ := json.Marshal(aud)
	e := exp.Unix()
	tok, _ := t.sign(header{Alg: alg, Typ: "JWT"}, payload{Iss: iss, Sub: sub, Aud: a, Exp: &e})
	return tok
}
