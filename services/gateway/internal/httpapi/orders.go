package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/shopmesh/shopmesh/pkg/platform/validation"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
)

// headerIdempotencyKey names the request header that makes POST /v1/orders safe to repeat.
const headerIdempotencyKey = "Idempotency-Key"

// createOrder places an order for the token's customer. The order service runs the saga before it
// answers, so a cancelled outcome is known here and becomes 409 (stock) or 402 (payment).
//
// CreateOrder needs an idempotency key: without one, a retry after an order replica died between its
// commit and its answer would place a second order. A request without the Idempotency-Key header gets
// a fresh UUID, which every retry of this call (the platform's, after UNAVAILABLE) reuses; the key used
// is echoed in the Idempotency-Key response header, on errors too, so the client can retry with it.
func (s *Server) createOrder(w http.ResponseWriter, r *http.Request) {
	claims, _ := claimsFrom(r.Context())
	key, bad := idempotencyKey(r)
	if bad != nil {
		writeError(w, *bad)
		return
	}
	if key == "" {
		key = uuid.NewString()
	}
	w.Header().Set(headerIdempotencyKey, key)
	var req CreateOrderRequest
	if e := decodeJSON(w, r, s.set.MaxBodyBytes, &req, false); e != nil {
		writeError(w, *e)
		return
	}
	in := &orderv1.CreateOrderRequest{CustomerId: claims.Subject, IdempotencyKey: key}
	for _, it := range req.Items {
		in.Items = append(in.Items, &orderv1.OrderItem{Sku: it.SKU, Quantity: it.Quantity})
	}
	ctx, cancel := s.outgoing(r, s.set.CreateTimeout)
	defer cancel()
	resp, err := s.deps.Orders.CreateOrder(ctx, in)
	if err != nil {
		s.writeRPCError(w, r, err)
		return
	}
	o := resp.GetOrder()
	if o.GetStatus() == orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
		if e, failed := outcomeError(o); failed {
			writeError(w, e)
			return
		}
		// Cancelled by the customer since: this is a retry of an order that was placed.
		writeJSON(w, http.StatusOK, orderDTO(o))
		return
	}
	w.Header().Set("Location", "/v1/orders/"+o.GetId())
	writeJSON(w, http.StatusCreated, orderDTO(o))
}

// idempotencyKey is the request's Idempotency-Key, "" without one; a header sent empty is refused
// (the document says the key has at least one character, so an empty one is not "no key").
func idempotencyKey(r *http.Request) (string, *Error) {
	key := r.Header.Get(headerIdempotencyKey)
	if _, sent := r.Header[headerIdempotencyKey]; sent && key == "" {
		e := newError(http.StatusBadRequest, codeValidation, "invalid "+headerIdempotencyKey,
			ErrorDetail{Field: headerIdempotencyKey, Issue: "must not be empty (leave the header out to get a key made up)"})
		return "", &e
	}
	return key, nil
}

// outcomeError maps a cancelled order to the error the caller gets; false for customer cancellations.
func outcomeError(o *orderv1.Order) (Error, bool) {
	var e Error
	switch o.GetCancelReason() {
	case orderv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK:
		e = newError(http.StatusConflict, "OUT_OF_STOCK", "order cancelled: not enough stock")
	case orderv1.CancelReason_CANCEL_REASON_UNKNOWN_PRODUCT:
		e = newError(http.StatusConflict, "OUT_OF_STOCK", "order cancelled: a product does not exist")
	case orderv1.CancelReason_CANCEL_REASON_PAYMENT_DECLINED:
		e = newError(http.StatusPaymentRequired, "PAYMENT_DECLINED", "order cancelled: payment declined")
	case orderv1.CancelReason_CANCEL_REASON_CUSTOMER_REQUESTED:
		return Error{}, false
	default:
		e = newError(http.StatusServiceUnavailable, "DEPENDENCY_FAILED", "order cancelled: a dependency failed; place a new order")
	}
	e.OrderID = o.GetId()
	return e, true
}

func notFound() Error { return newError(http.StatusNotFound, "ORDER_NOT_FOUND", "order not found") }

// ownOrder reads an order and hides other customers' orders as not found.
func (s *Server) ownOrder(w http.ResponseWriter, r *http.Request, id string) (*orderv1.Order, bool) {
	claims, _ := claimsFrom(r.Context())
	ctx, cancel := s.outgoing(r, s.set.CallTimeout)
	defer cancel()
	resp, err := s.deps.Orders.GetOrder(ctx, &orderv1.GetOrderRequest{OrderId: id})
	if err != nil {
		s.writeRPCError(w, r, err)
		return nil, false
	}
	if resp.GetOrder().GetCustomerId() != claims.Subject {
		writeError(w, notFound())
		return nil, false
	}
	return resp.GetOrder(), true
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) {
	if o, ok := s.ownOrder(w, r, r.PathValue("id")); ok {
		writeJSON(w, http.StatusOK, orderDTO(o))
	}
}

// orderAction serves POST /v1/orders/{id}:<verb>; only cancel exists.
func (s *Server) orderAction(w http.ResponseWriter, r *http.Request) {
	id, verb, _ := strings.Cut(r.PathValue("rest"), ":")
	if verb != "cancel" {
		writeError(w, newError(http.StatusNotFound, codeNotFound, "no such route"))
		return
	}
	var req CancelOrderRequest
	if e := decodeJSON(w, r, s.set.MaxBodyBytes, &req, true); e != nil {
		writeError(w, *e)
		return
	}
	in := &orderv1.CancelOrderRequest{OrderId: id, Reason: req.Reason}
	// The request's rules first (the document states them): the ownership check below would
	// otherwise answer an invalid request for an unknown order with 404.
	if err := validation.Proto(in); err != nil {
		s.writeRPCError(w, r, validation.ToStatus(err))
		return
	}
	if _, ok := s.ownOrder(w, r, id); !ok {
		return
	}
	ctx, cancel := s.outgoing(r, s.set.CallTimeout)
	defer cancel()
	resp, err := s.deps.Orders.CancelOrder(ctx, in)
	if err != nil {
		s.writeRPCError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, orderDTO(resp.GetOrder()))
}

// watchOrder streams the order's states as server-sent events. The first state is read before the
// response starts, so errors and other customers' orders still get a proper status; the stream ends
// after a terminal status, when the client goes away, after StreamMaxDuration, or at shutdown.
func (s *Server) watchOrder(w http.ResponseWriter, r *http.Request) {
	claims, _ := claimsFrom(r.Context())
	ctx, cancel := s.outgoing(r, s.set.StreamMaxDuration)
	defer cancel()
	stopOnClose := context.AfterFunc(s.closing, cancel)
	defer stopOnClose()

	stream, err := s.deps.Orders.WatchOrder(ctx, &orderv1.WatchOrderRequest{OrderId: r.PathValue("id")})
	if err != nil {
		s.writeRPCError(w, r, err)
		return
	}
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("watch ended before the first state: %w", err)
		}
		s.writeRPCError(w, r, err)
		return
	}
	if first.GetOrder().GetCustomerId() != claims.Subject {
		writeError(w, notFound())
		return
	}
	s.streams.Inc()
	defer s.streams.Dec()
	rc := http.NewResponseController(w)
	// The stream is bounded by StreamMaxDuration, not by the connection's ReadTimeout (a client that
	// goes away is still noticed by the server's background read).
	if err := rc.SetReadDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		logError(s.log, r, "order event stream: read deadline", err)
	}
	h := w.Header()
	h.Set("Content-Type", ctSSE)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	o := first.GetOrder()
	for {
		if err := s.sendEvent(w, rc, orderDTO(o)); err != nil {
			logError(s.log, r, "order event stream: write", err)
			return
		}
		if o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING {
			return
		}
		msg, err := stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			return
		case err != nil && ctx.Err() != nil:
			return // client gone, stream too long, or shutting down
		case err != nil:
			e := s.rpcError(r, err)
			_ = s.sendNamed(w, rc, "error", e)
			return
		}
		o = msg.GetOrder()
	}
}

func (s *Server) sendEvent(w http.ResponseWriter, rc *http.ResponseController, v any) error {
	return s.sendNamed(w, rc, "", v)
}

// sendNamed writes one event and flushes it, each write with its own deadline: the server's
// WriteTimeout would cut a long stream, so streams extend it per event instead.
func (s *Server) sendNamed(w http.ResponseWriter, rc *http.ResponseController, event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := rc.SetWriteDeadline(time.Now().Add(s.set.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	var msg strings.Builder
	if event != "" {
		msg.WriteString("event: " + event + "\n")
	}
	msg.WriteString("data: ")
	msg.Write(b)
	msg.WriteString("\n\n")
	if _, err := io.WriteString(w, msg.String()); err != nil {
		return err
	}
	return rc.Flush()
}
