package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"

	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/gateway/internal/auth"
)

func (s *Server) myAccount(w http.ResponseWriter, r *http.Request) {
	claims, _ := claimsFrom(r.Context())
	ctx, cancel := s.outgoing(r, s.set.CallTimeout)
	defer cancel()
	resp, err := s.deps.Payment.GetAccount(ctx, &paymentv1.GetAccountRequest{CustomerId: claims.Subject})
	if err != nil {
		s.writeRPCError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, accountDTO(resp.GetAccount()))
}

// devToken mints a token for any customer: a development convenience that exists in the dev profile only,
// and answers only requests that arrived on a loopback address (whatever address the server listens on).
func (s *Server) devToken(w http.ResponseWriter, r *http.Request) {
	if !s.set.DevTokens || !arrivedOnLoopback(r) {
		writeError(w, newError(http.StatusNotFound, codeNotFound, "no such route"))
		return
	}
	var req DevTokenRequest
	if e := decodeJSON(w, r, s.set.MaxBodyBytes, &req, false); e != nil {
		writeError(w, *e)
		return
	}
	var bad []ErrorDetail
	if !s.customerID.MatchString(req.CustomerID) {
		bad = append(bad, ErrorDetail{Field: "customer_id", Issue: "must match " + s.customerID.String()})
	}
	for i, sc := range req.Scopes {
		if sc != auth.ScopeAdmin {
			bad = append(bad, ErrorDetail{Field: "scopes[" + strconv.Itoa(i) + "]", Issue: `must be "admin"`})
		}
	}
	if len(bad) > 0 {
		writeError(w, newError(http.StatusBadRequest, codeValidation, "request is invalid", bad...))
		return
	}
	tok, err := s.deps.Tokens.Issue(req.CustomerID, req.Scopes, s.set.TokenTTL)
	if err != nil {
		s.log.ErrorContext(r.Context(), "issue token", "err", err)
		writeError(w, newError(http.StatusInternalServerError, codeInternal, "internal error"))
		return
	}
	writeJSON(w, http.StatusOK, Token{Token: tok})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, Health{Status: "ok"})
}

// arrivedOnLoopback reports whether r came in on a loopback address of this host (the local address of
// its connection, http.LocalAddrContextKey), so that no other machine reaches it.
func arrivedOnLoopback(r *http.Request) bool {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
