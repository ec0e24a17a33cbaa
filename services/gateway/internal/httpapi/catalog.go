package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"time"

	"github.com/google/uuid"

	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
)

// Paging of the catalogue: the largest page inventory serves, and a bound on the pages read so a
// broken page token cannot loop forever.
const (
	productPageSize = 100
	maxProductPages = 1000
)

func (s *Server) listProducts(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.outgoing(r, s.set.CallTimeout)
	defer cancel()
	out := ProductList{Products: []Product{}}
	token := ""
	for range maxProductPages {
		resp, err := s.deps.Inventory.ListProducts(ctx, &inventoryv1.ListProductsRequest{PageSize: productPageSize, PageToken: token})
		if err != nil {
			s.writeRPCError(w, r, err)
			return
		}
		for _, p := range resp.GetProducts() {
			out.Products = append(out.Products, productDTO(p))
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getProduct(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.outgoing(r, s.set.CallTimeout)
	defer cancel()
	resp, err := s.deps.Inventory.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: r.PathValue("sku")})
	if err != nil {
		s.writeRPCError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, productDTO(resp.GetProduct()))
}

// maxLocalRejects is how many unparsable lines get their parse error in the summary; inventory itemises
// only the first 100 rejections anyway.
const maxLocalRejects = 100

// importKeyPattern is inventory's rule for import ids, checked here so a bad header is named as such.
var importKeyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// importID is the import id of an upload: its Idempotency-Key, or a new random one.
func importID(r *http.Request) (string, *Error) {
	key, bad := idempotencyKey(r)
	if bad != nil {
		return "", bad
	}
	if key == "" {
		return uuid.NewString(), nil
	}
	if !importKeyPattern.MatchString(key) {
		e := newError(http.StatusBadRequest, codeValidation, "invalid Idempotency-Key",
			ErrorDetail{Field: "Idempotency-Key", Issue: "must be 1 to 128 letters, digits or ._:- starting with a letter or digit"})
		return "", &e
	}
	return key, nil
}

// importStock streams the NDJSON body to ImportStock line by line (nothing is buffered beyond one line),
// so lines are applied while the upload is still arriving. Every line carries the import id (the
// Idempotency-Key, or one made up here and returned in that header) and its number among the non-empty
// lines as seq, so inventory applies each line once: an upload repeated with the same key — after a
// timeout, a dropped connection or a 5xx — adds only the lines that were not applied yet. A line that is
// not a valid ImportLine is still sent, as a message without content, so inventory rejects it and the
// line numbers of its summary stay those of the body; its reason is replaced by the parse error here.
// Empty lines are skipped.
func (s *Server) importStock(w http.ResponseWriter, r *http.Request) {
	id, bad := importID(r)
	if bad != nil {
		writeError(w, *bad)
		return
	}
	w.Header().Set("Idempotency-Key", id)
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(s.set.ImportTimeout)
	_ = rc.SetReadDeadline(deadline)
	_ = rc.SetWriteDeadline(deadline)
	ctx, cancel := s.outgoing(r, s.set.ImportTimeout)
	defer cancel()
	stream, err := s.deps.Inventory.ImportStock(ctx)
	if err != nil {
		s.writeRPCError(w, r, err)
		return
	}
	sc := bufio.NewScanner(http.MaxBytesReader(w, r.Body, s.set.MaxImportBytes))
	sc.Buffer(make([]byte, 0, 4096), s.set.MaxImportLineBytes)
	local := map[int64]string{}
	var n int64
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		n++
		req, reason := parseImportLine(line)
		req.ImportId, req.Seq = id, n
		if reason != "" && len(local) < maxLocalRejects {
			local[n] = reason
		}
		if err := stream.Send(req); err != nil {
			// The stream broke; CloseAndRecv returns the status that ended it.
			_, err = stream.CloseAndRecv()
			s.writeRPCError(w, r, err)
			return
		}
	}
	if err := sc.Err(); err != nil {
		cancel() // abandon the import; lines already sent stay applied
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			writeError(w, newError(http.StatusRequestEntityTooLarge, codeTooLarge,
				fmt.Sprintf("the import is larger than %d bytes; the first %d lines were applied", s.set.MaxImportBytes, n)))
		case errors.Is(err, bufio.ErrTooLong):
			writeError(w, newError(http.StatusRequestEntityTooLarge, codeTooLarge,
				fmt.Sprintf("line %d is longer than %d bytes; the lines before it were applied", n+1, s.set.MaxImportLineBytes)))
		default:
			writeError(w, newError(http.StatusBadRequest, codeInvalidJSON, "the body could not be read"))
		}
		return
	}
	if n == 0 {
		cancel() // nothing was sent: the import is abandoned
		writeError(w, newError(http.StatusBadRequest, codeValidation, "the import has no lines",
			ErrorDetail{Field: "body", Issue: "must hold at least one non-empty line"}))
		return
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		s.writeRPCError(w, r, err)
		return
	}
	sum := summaryDTO(resp)
	sum.ImportID = id
	for i, e := range sum.Errors {
		if reason, ok := local[e.Line]; ok {
			sum.Errors[i].Reason = reason
		}
	}
	writeJSON(w, http.StatusOK, sum)
}

// parseImportLine decodes one line strictly; on failure it returns an empty request and why.
func parseImportLine(line []byte) (*inventoryv1.ImportStockRequest, string) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var l ImportLine
	if e := strictShape(line, reflect.TypeFor[ImportLine]()); e != nil && len(e.Details) > 0 {
		return &inventoryv1.ImportStockRequest{}, e.Details[0].Field + ": " + e.Details[0].Issue
	}
	if err := dec.Decode(&l); err != nil {
		e := jsonError(err, 0)
		if e.Code == codeInvalidJSON && len(e.Details) > 0 {
			return &inventoryv1.ImportStockRequest{}, "invalid JSON: " + e.Details[0].Issue
		}
		if len(e.Details) > 0 {
			return &inventoryv1.ImportStockRequest{}, e.Details[0].Field + ": " + e.Details[0].Issue
		}
		return &inventoryv1.ImportStockRequest{}, e.Message
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &inventoryv1.ImportStockRequest{}, "more than one JSON value on the line"
	}
	return &inventoryv1.ImportStockRequest{Sku: l.SKU, Quantity: l.Quantity, Name: l.Name, PriceCents: l.PriceCents, Currency: l.Currency}, ""
}
