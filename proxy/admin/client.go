package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sloproxy/sloproxy/selection"
	"github.com/sloproxy/sloproxy/state"
)

// DefaultAddr is where the serve command listens for the admin API unless
// configured otherwise (config.DefaultAdminListen, the same address);
// DefaultURL is the same for a client.
const (
	DefaultAddr = "127.0.0.1:1338"
	DefaultURL  = "http://" + DefaultAddr
)

// DefaultClientTimeout bounds each call of a Client without its own
// http.Client.
const DefaultClientTimeout = 30 * time.Second

// Client calls the admin API. Its zero value is not usable: set BaseURL
// and Token.
type Client struct {
	// BaseURL is the API's scheme, host and port, such as DefaultURL;
	// a path, if any, is kept in front of /api/v1.
	BaseURL string
	// Token is the bearer token.
	Token string
	// HTTPClient makes the calls. Nil means a client with a
	// DefaultClientTimeout timeout.
	HTTPClient *http.Client
	// Force makes Link, SetCurrent and SetSelection move an app's traffic
	// even when the profile gate refuses the version (the API's force).
	Force bool
}

// Error is an error answer of the API.
type Error struct {
	// StatusCode is the HTTP status, such as 404.
	StatusCode int
	// Message is the answer's "error" field, or the start of its body
	// when it is not the API's JSON (a proxy in between, say).
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// StatusCode returns the status of err's API answer, or 0 when err is not
// (or does not wrap) an *Error.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// Apps lists every app.
func (c *Client) Apps(ctx context.Context) ([]AppView, error) {
	var list AppList
	err := c.do(ctx, http.MethodGet, pathApps, nil, &list)
	return list.Apps, err
}

// App returns the app named name.
func (c *Client) App(ctx context.Context, name string) (AppView, error) {
	var a AppView
	err := c.do(ctx, http.MethodGet, pathApps+"/"+seg(name), nil, &a)
	return a, err
}

// CreateApp creates app a; an existing app of that name is a conflict.
func (c *Client) CreateApp(ctx context.Context, a App) (AppView, error) {
	var v AppView
	err := c.do(ctx, http.MethodPost, pathApps, a, &v)
	return v, err
}

// PutApp creates app a or replaces the app of that name.
func (c *Client) PutApp(ctx context.Context, a App) (AppView, error) {
	var v AppView
	err := c.do(ctx, http.MethodPut, pathApps+"/"+seg(a.Name), a, &v)
	return v, err
}

// DeleteApp deletes the app named name and its links.
func (c *Client) DeleteApp(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, pathApps+"/"+seg(name), nil, nil)
}

// Link lets app use model, and returns the app.
func (c *Client) Link(ctx context.Context, app, model string) (AppView, error) {
	var v AppView
	var body any // none unless forced: an unforced link sends no body
	if c.Force {
		body = LinkRequest{Force: true}
	}
	err := c.do(ctx, http.MethodPut, pathApps+"/"+seg(app)+"/links/"+seg(model), body, &v)
	return v, err
}

// Unlink stops app from using model, and returns the app.
func (c *Client) Unlink(ctx context.Context, app, model string) (AppView, error) {
	var v AppView
	err := c.do(ctx, http.MethodDelete, pathApps+"/"+seg(app)+"/links/"+seg(model), nil, &v)
	return v, err
}

// SetSelection sets app's selection spec, in the selection package's JSON
// form, and returns the app.
func (c *Client) SetSelection(ctx context.Context, app string, spec json.RawMessage) (AppView, error) {
	var v AppView
	path := pathApps + "/" + seg(app) + "/selection"
	if c.Force {
		path += "?force=true"
	}
	err := c.do(ctx, http.MethodPut, path, spec, &v)
	return v, err
}

// ClearSelection removes app's selection spec and returns the app.
func (c *Client) ClearSelection(ctx context.Context, app string) (AppView, error) {
	var v AppView
	err := c.do(ctx, http.MethodDelete, pathApps+"/"+seg(app)+"/selection", nil, &v)
	return v, err
}

// Selection returns what app's selection policy has learned, and its spec.
func (c *Client) Selection(ctx context.Context, app string) (selection.Status, error) {
	var st selection.Status
	err := c.do(ctx, http.MethodGet, pathApps+"/"+seg(app)+"/selection", nil, &st)
	return st, err
}

// SetFeatures sets app's feature lookup, in the features package's JSON
// form, and returns the app.
func (c *Client) SetFeatures(ctx context.Context, app string, spec json.RawMessage) (AppView, error) {
	var v AppView
	err := c.do(ctx, http.MethodPut, pathApps+"/"+seg(app)+"/features", spec, &v)
	return v, err
}

// ClearFeatures removes the feature lookup SetFeatures set and returns the
// app.
func (c *Client) ClearFeatures(ctx context.Context, app string) (AppView, error) {
	var v AppView
	err := c.do(ctx, http.MethodDelete, pathApps+"/"+seg(app)+"/features", nil, &v)
	return v, err
}

// Features returns app's feature lookup in effect and where it comes from.
func (c *Client) Features(ctx context.Context, app string) (FeaturesView, error) {
	var v FeaturesView
	err := c.do(ctx, http.MethodGet, pathApps+"/"+seg(app)+"/features", nil, &v)
	return v, err
}

// Models lists every model.
func (c *Client) Models(ctx context.Context) ([]ModelView, error) {
	var list ModelList
	err := c.do(ctx, http.MethodGet, pathModels, nil, &list)
	return list.Models, err
}

// Model returns the model named name.
func (c *Client) Model(ctx context.Context, name string) (ModelView, error) {
	var m ModelView
	err := c.do(ctx, http.MethodGet, pathModels+"/"+seg(name), nil, &m)
	return m, err
}

// RegisterVersion registers version v of model v.Model, and returns the
// model.
func (c *Client) RegisterVersion(ctx context.Context, v state.ModelVersion) (ModelView, error) {
	var m ModelView
	err := c.do(ctx, http.MethodPost, pathModels+"/"+seg(v.Model)+"/versions", v, &m)
	return m, err
}

// SetCurrent makes version the current version of model (a rollback when
// it is older), and returns the model.
func (c *Client) SetCurrent(ctx context.Context, model, version string) (ModelView, error) {
	var m ModelView
	err := c.do(ctx, http.MethodPut, pathModels+"/"+seg(model)+"/current", CurrentRequest{Version: version, Force: c.Force}, &m)
	return m, err
}

// Profile profiles version of model now, stores the profile with the
// version and returns it.
func (c *Client) Profile(ctx context.Context, model, version string, req ProfileRequest) (ProfileView, error) {
	var p ProfileView
	err := c.do(ctx, http.MethodPost, pathModels+"/"+seg(model)+"/versions/"+seg(version)+"/profile", req, &p)
	return p, err
}

// SetReplicas sets the desired replica count of version of model, and
// returns the model.
func (c *Client) SetReplicas(ctx context.Context, model, version string, n int) (ModelView, error) {
	var m ModelView
	err := c.do(ctx, http.MethodPut, pathModels+"/"+seg(model)+"/versions/"+seg(version)+"/replicas", ReplicasRequest{Replicas: n}, &m)
	return m, err
}

// DeleteVersion deletes version of model, and the model with its last
// version.
func (c *Client) DeleteVersion(ctx context.Context, model, version string) error {
	return c.do(ctx, http.MethodDelete, pathModels+"/"+seg(model)+"/versions/"+seg(version), nil, nil)
}

// PurgeCache purges the cached predictions of an app's models or of a
// model.
func (c *Client) PurgeCache(ctx context.Context, req PurgeRequest) error {
	return c.do(ctx, http.MethodPost, pathPurge, req, nil)
}

// Health calls the health check, which needs no token.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.do(ctx, http.MethodGet, pathHealthz, nil, &h)
	return h, err
}

// seg escapes a name for use as one path segment. Valid names need no
// escaping; an invalid one then reaches the API, which names the problem.
func seg(name string) string { return url.PathEscape(name) }

// maxAnswerBytes bounds the answers a Client reads.
const maxAnswerBytes = 64 << 20

// do sends in (when not nil) as JSON and decodes the answer into out (when
// not nil). An error answer becomes an *Error.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("admin: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: DefaultClientTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("admin API: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return answerError(resp.StatusCode, b)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin API: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// answerError makes the *Error for an error answer.
func answerError(status int, body []byte) error {
	var eb ErrorBody
	if err := json.Unmarshal(body, &eb); err == nil && eb.Error != "" {
		return &Error{StatusCode: status, Message: eb.Error}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = "(no message)"
	}
	return &Error{StatusCode: status, Message: msg}
}
