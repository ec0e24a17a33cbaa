// Package rpc serves shopmesh.inventory.v1.InventoryService on top of the application.
package rpc

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
)

// Server implements InventoryService.
type Server struct {
	inventoryv1.UnimplementedInventoryServiceServer
	app *app.App
	log *slog.Logger
}

// NewServer returns the service. Register it on a server of the platform (platform.NewServer): that
// server ends WatchStock streams when it drains, so a graceful stop does not wait for them.
func NewServer(a *app.App, log *slog.Logger) *Server {
	return &Server{app: a, log: log}
}

// Register registers the server on s.
func (s *Server) Register(r grpc.ServiceRegistrar) { inventoryv1.RegisterInventoryServiceServer(r, s) }

// ReserveStock implements InventoryService.
func (s *Server) ReserveStock(ctx context.Context, req *inventoryv1.ReserveStockRequest) (*inventoryv1.ReserveStockResponse, error) {
	items := make([]domain.Item, len(req.GetItems()))
	for i, it := range req.GetItems() {
		items[i] = domain.Item{SKU: it.GetSku(), Quantity: int64(it.GetQuantity())}
	}
	r, err := s.app.ReserveStock(ctx, req.GetOrderId(), items)
	if err != nil {
		return nil, toStatus(err)
	}
	return &inventoryv1.ReserveStockResponse{Reservation: reservationPB(r)}, nil
}

// ReleaseStock implements InventoryService.
func (s *Server) ReleaseStock(ctx context.Context, req *inventoryv1.ReleaseStockRequest) (*inventoryv1.ReleaseStockResponse, error) {
	r, found, err := s.app.ReleaseStock(ctx, req.GetOrderId())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &inventoryv1.ReleaseStockResponse{}
	if found {
		resp.Reservation = reservationPB(r)
	}
	return resp, nil
}

// CommitStock implements InventoryService.
func (s *Server) CommitStock(ctx context.Context, req *inventoryv1.CommitStockRequest) (*inventoryv1.CommitStockResponse, error) {
	r, err := s.app.CommitStock(ctx, req.GetOrderId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &inventoryv1.CommitStockResponse{Reservation: reservationPB(r)}, nil
}

// GetProduct implements InventoryService.
func (s *Server) GetProduct(ctx context.Context, req *inventoryv1.GetProductRequest) (*inventoryv1.GetProductResponse, error) {
	p, err := s.app.GetProduct(ctx, req.GetSku())
	if err != nil {
		return nil, toStatus(err)
	}
	return &inventoryv1.GetProductResponse{Product: productPB(p)}, nil
}

// ListProducts implements InventoryService. The page token is the last SKU of the previous page,
// base64url-encoded: SKUs never change, so pages are stable under concurrent writes.
func (s *Server) ListProducts(ctx context.Context, req *inventoryv1.ListProductsRequest) (*inventoryv1.ListProductsResponse, error) {
	after := ""
	if t := req.GetPageToken(); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		if err != nil || !domain.ValidSKU(string(b)) {
			return nil, rpcerr.InvalidArgument(rpcerr.FieldViolation{Field: "page_token", Description: "is not a token from ListProducts"})
		}
		after = string(b)
	}
	ps, more, err := s.app.ListProducts(ctx, after, int(req.GetPageSize()))
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &inventoryv1.ListProductsResponse{Products: make([]*inventoryv1.Product, len(ps))}
	for i, p := range ps {
		resp.Products[i] = productPB(p)
	}
	if more && len(ps) > 0 {
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(ps[len(ps)-1].SKU))
	}
	return resp, nil
}

// WatchStock implements InventoryService. It runs until the client goes away or the server drains
// (the platform cancels the stream's context then).
func (s *Server) WatchStock(req *inventoryv1.WatchStockRequest, stream grpc.ServerStreamingServer[inventoryv1.WatchStockResponse]) error {
	err := s.app.WatchStock(stream.Context(), req.GetSkus(), func(l domain.StockLevel) error {
		return stream.Send(&inventoryv1.WatchStockResponse{Level: levelPB(l)})
	})
	if err != nil {
		return toStatus(err)
	}
	if err := stream.Context().Err(); err != nil {
		return toStatus(err)
	}
	return nil
}

// maxImportErrors bounds the rejections itemised in an import summary.
const maxImportErrors = 100

// ImportStock implements InventoryService: each line is applied in its own transaction as it arrives,
// at most once per (import_id, seq) across streams and instances. A line that is invalid (including one
// the validation interceptor refused) or cannot be applied is counted and itemised, and the stream goes
// on; a line whose identity is wrong ends the stream with INVALID_ARGUMENT, since nothing after it
// could be applied exactly once.
func (s *Server) ImportStock(stream grpc.ClientStreamingServer[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]) error {
	ctx := stream.Context()
	sum := &inventoryv1.ImportStockResponse{}
	var lastSeq int64
	reject := func(line int64, req *inventoryv1.ImportStockRequest, reason string) {
		sum.LinesRejected++
		if len(sum.Errors) < maxImportErrors {
			sum.Errors = append(sum.Errors, &inventoryv1.ImportStockError{Line: line, Sku: req.GetSku(), Reason: reason, Seq: req.GetSeq()})
		}
	}
	for {
		req := new(inventoryv1.ImportStockRequest)
		err := stream.RecvMsg(req)
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(sum)
		}
		if err != nil && rpcerr.Code(err) != codes.InvalidArgument {
			return toStatus(err)
		}
		sum.LinesReceived++
		n := sum.LinesReceived
		if kerr := checkImportKey(req, err, n, sum.ImportId, lastSeq); kerr != nil {
			return kerr
		}
		sum.ImportId, lastSeq = req.GetImportId(), req.GetSeq()
		if err != nil {
			// The message was decoded; the validation interceptor refused it.
			reject(n, req, violationText(err))
			continue
		}
		res, err := s.app.ImportLine(ctx, importLine(req))
		var ie *domain.InvalidError
		switch {
		case errors.As(err, &ie):
			reject(n, req, ie.Error())
		case err != nil && ctx.Err() != nil:
			return toStatus(ctx.Err())
		case err != nil:
			s.log.ErrorContext(ctx, "import line", "import_id", req.GetImportId(), "seq", req.GetSeq(), "sku", req.GetSku(), "err", err)
			reject(n, req, "could not be applied")
		case res.Skipped:
			sum.LinesSkipped++
		default:
			sum.LinesApplied++
			sum.UnitsAdded += req.GetQuantity()
		}
	}
}

// checkImportKey refuses line n of a stream when its identity is unusable: the validation interceptor
// refused its import_id or seq (verr), its import_id differs from the stream's, or its seq does not
// increase. The violations name the field and the line.
func checkImportKey(req *inventoryv1.ImportStockRequest, verr error, n int64, importID string, lastSeq int64) error {
	var vs []rpcerr.FieldViolation
	for _, v := range rpcerr.Violations(verr) {
		if v.Field == "import_id" || v.Field == "seq" {
			vs = append(vs, rpcerr.FieldViolation{Field: v.Field, Description: fmt.Sprintf("%s (line %d)", v.Description, n)})
		}
	}
	if len(vs) > 0 {
		return rpcerr.InvalidArgument(vs...)
	}
	var ie *domain.InvalidError
	if errors.As(importLine(req).ValidateKey(), &ie) { // the same rules, should the interceptor be missing
		return rpcerr.InvalidArgument(rpcerr.FieldViolation{Field: ie.Field, Description: fmt.Sprintf("%s (line %d)", ie.Reason, n)})
	}
	switch {
	case importID != "" && req.GetImportId() != importID:
		return rpcerr.InvalidArgument(rpcerr.FieldViolation{Field: "import_id",
			Description: fmt.Sprintf("must be the same on every line of a stream (line %d has %q, line 1 had %q)", n, req.GetImportId(), importID)})
	case req.GetSeq() <= lastSeq:
		return rpcerr.InvalidArgument(rpcerr.FieldViolation{Field: "seq",
			Description: fmt.Sprintf("must increase along the stream (line %d has %d after %d)", n, req.GetSeq(), lastSeq)})
	}
	return nil
}

func violationText(err error) string {
	vs := rpcerr.Violations(err)
	if len(vs) == 0 {
		return "invalid line"
	}
	text := ""
	for i, v := range vs {
		if i > 0 {
			text += "; "
		}
		text += v.Field + ": " + v.Description
	}
	return text
}

func importLine(req *inventoryv1.ImportStockRequest) domain.ImportLine {
	return domain.ImportLine{
		ImportID: req.GetImportId(), Seq: req.GetSeq(),
		SKU: req.GetSku(), Quantity: req.GetQuantity(),
		Name: req.Name, PriceCents: req.PriceCents, Currency: req.Currency,
	}
}

func reservationPB(r domain.Reservation) *inventoryv1.Reservation {
	out := &inventoryv1.Reservation{
		OrderId:    r.OrderID,
		Status:     statusPB(r.Status),
		TotalCents: r.Total(),
		Currency:   r.Currency,
		CreatedAt:  timestamppb.New(r.CreatedAt),
		UpdatedAt:  timestamppb.New(r.UpdatedAt),
	}
	for _, l := range r.Lines {
		out.Lines = append(out.Lines, &inventoryv1.ReservationLine{
			Sku: l.SKU, Quantity: int32(l.Quantity), UnitPriceCents: l.UnitPriceCents, LineTotalCents: l.Total(),
		})
	}
	return out
}

func statusPB(s domain.Status) inventoryv1.ReservationStatus {
	switch s {
	case domain.StatusHeld:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_HELD
	case domain.StatusCommitted:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED
	case domain.StatusReleased:
		return inventoryv1.ReservationStatus_RESERVATION_STATUS_RELEASED
	}
	return inventoryv1.ReservationStatus_RESERVATION_STATUS_UNSPECIFIED
}

func productPB(p domain.Product) *inventoryv1.Product {
	return &inventoryv1.Product{
		Sku: p.SKU, Name: p.Name, PriceCents: p.PriceCents, Currency: p.Currency,
		OnHand: p.OnHand, Reserved: p.Reserved, Available: p.Available(), Version: p.Version,
	}
}

func levelPB(l domain.StockLevel) *inventoryv1.StockLevel {
	return &inventoryv1.StockLevel{
		Sku: l.SKU, OnHand: l.OnHand, Reserved: l.Reserved, Available: l.Available(), Version: l.Version,
		UpdatedAt: timestamppb.New(l.UpdatedAt),
	}
}
