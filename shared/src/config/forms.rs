//! What each variable expects, in the words an error shows an operator.

use super::names::*;

pub(super) const TABLE_NAME_FORM: &str = "a DynamoDB table name: 3 to 255 characters of a-z, A-Z, 0-9, '_', '-' or '.'";
pub(super) const TTL_FORM: &str = "whole seconds from 60 to 7260 (API Gateway closes every connection after 2 hours; 60 s more lets its $disconnect come first)";
pub(super) const ENDPOINT_FORM: &str =
    "an http(s) URL with the stage, such as https://abc123.execute-api.eu-west-1.amazonaws.com/prod";
pub(super) const CONCURRENCY_FORM: &str = "a whole number of concurrent posts from 1 to 1000";
pub(super) const ATTEMPTS_FORM: &str = "a whole number of attempts per post from 1 to 10";
pub(super) const POST_QUOTA_FORM: &str = "a whole number of posts per second from 0 (no pacing) to 1000000";
pub(super) const MAX_CHANNELS_FORM: &str = "a whole number of channels per connection from 1 to 100";
pub(super) const BOOL_FORM: &str = "true or false";
pub(super) const ATTEMPTS_PER_IP_FORM: &str = "a whole number of connection attempts per IP per window, 0 for no limit";
pub(super) const WINDOW_FORM: &str = "whole seconds from 1 to 3600";
pub(super) const CAP_FORM: &str = "a whole number of open connections, 0 for no cap";
pub(super) const HISTORY_SIZE_FORM: &str =
    "a whole number of messages per channel from 0 (no positions, history or recovery) to 10000";
pub(super) const HISTORY_TTL_FORM: &str = "whole seconds from 60 to 604800 (7 days)";
pub(super) const MESSAGE_RETENTION_FORM: &str = "whole seconds from 60 to 31536000 (a year)";
pub(super) const FAILURE_QUEUE_URL_FORM: &str =
    "the URL of an SQS queue, https://sqs.{region}.amazonaws.com/{12-digit account id}/{queue name} (http only for a local server)";
pub(super) const JWKS_URL_FORM: &str =
    "the https URL of the identity provider's JWKS, such as https://cognito-idp.{region}.amazonaws.com/{pool}/.well-known/jwks.json (http only for localhost)";
pub(super) const ISSUER_FORM: &str = "the issuer tokens must name in iss, such as https://cognito-idp.{region}.amazonaws.com/{userPoolId} or https://{tenant}.auth0.com/";
pub(super) const AUDIENCE_FORM: &str =
    "one audience, or several separated by commas, that tokens must name in aud (a Cognito access token: in client_id)";
pub(super) const JWKS_ISSUER_FORM: &str = "the issuer of the JWKS URL's tokens, which every token must name in iss (required with AIRWAVE_JWKS_URL), such as https://cognito-idp.{region}.amazonaws.com/{userPoolId} or https://{tenant}.auth0.com/";
pub(super) const JWKS_AUDIENCE_FORM: &str = "the audience of this deployment's tokens (required with AIRWAVE_JWKS_URL): the app client id of a Cognito user pool or the API identifier of Auth0, several separated by commas; or AIRWAVE_JWT_ALLOW_ANY_AUDIENCE=true to accept the provider's tokens for any application";
pub(super) const ANY_AUDIENCE_FORM: &str =
    "false when AIRWAVE_JWT_AUDIENCE is set: an audience and \"any audience\" contradict each other";
pub(super) const JWT_SECRET_ARN_FORM: &str = "the ARN of a Secrets Manager secret, arn:aws:secretsmanager:{region}:{account id}:secret:{name}, whose value is the HS256 secret (32 bytes or more) or a JSON object of such secrets by key id, {\"2026-12\": \"…\"}; unset when AIRWAVE_JWT_SECRET is set";
pub(super) const SERVER_KEYS_FORM: &str = "one or more server keys separated by commas, each at least 32 printable ASCII characters without '.', ',' or spaces (for local stacks; a deployment uses AIRWAVE_SERVER_KEY_SECRET_ARN)";
pub(super) const SERVER_KEY_SECRET_ARN_FORM: &str = "the ARN of a Secrets Manager secret, arn:aws:secretsmanager:{region}:{account id}:secret:{name}, whose value lists the server keys (separated by commas or newlines, or a JSON array); unset when AIRWAVE_SERVER_KEYS is set";
pub(super) const SECRET_REFRESH_FORM: &str =
    "whole seconds from 1 to 3600 between reads of the token secret from Secrets Manager";
pub(super) const REFETCH_FORM: &str = "whole seconds from 1 to 3600 between fetches of the JWKS for an unknown key id";
pub(super) const CLAIM_FORM: &str = "a claim name: 1 to 128 characters of A-Z, a-z, 0-9, '_', '-', '.', ':' or '/'";
pub(super) const JWT_SECRET_FORM: &str = "an HS256 secret of at least 32 bytes";
pub(super) const OPERATOR_CLAIM_FORM: &str =
    "a claim name (the claim must be true), or claim=value (the claim must be that string or a list holding it), such as cognito:groups=operators";
pub(super) const PUBLISH_RATE_FORM: &str = "a whole number of publishes per connection per window, 0 for no limit";
pub(super) const PUBLISH_RATE_PER_USER_FORM: &str =
    "a whole number of publishes per user (all of its connections) per window, 0 for no limit";
pub(super) const PUBLISH_RATE_PER_IP_FORM: &str =
    "a whole number of publishes per source IP (all of its connections) per window, 0 for no limit";
pub(super) const USER_CAP_MODE_FORM: &str = "refuse (a new connection over the per-user cap is refused) or evict_oldest (the user's oldest connection is closed to make room)";
pub(super) const STATS_MAX_AGE_FORM: &str = "whole seconds from 1 to 3600 that one count of the stats is answered from";
pub(super) const ATTEMPT_TIMEOUT_FORM: &str =
    "whole milliseconds from 50 to 60000 that one attempt of an AWS call may take";
pub(super) const OPERATION_TIMEOUT_FORM: &str =
    "whole milliseconds from 100 to 60000 that an AWS call may take, its retries included";

/// The form of each variable's value, for a value that cannot even be read as
/// its type (a number that is none, a flag that is neither true nor false).
pub(super) fn form_of(variable: &str) -> Option<&'static str> {
    let form = match variable {
        CONNECTIONS_TABLE | MESSAGES_TABLE | SUBSCRIPTIONS_TABLE | ADMISSION_TABLE | HISTORY_TABLE => TABLE_NAME_FORM,
        CONNECTION_TTL_SECONDS => TTL_FORM,
        MANAGEMENT_ENDPOINT => ENDPOINT_FORM,
        FANOUT_CONCURRENCY => CONCURRENCY_FORM,
        POST_MAX_ATTEMPTS => ATTEMPTS_FORM,
        POST_QUOTA_PER_SECOND => POST_QUOTA_FORM,
        MAX_CHANNELS_PER_CONNECTION => MAX_CHANNELS_FORM,
        ALLOW_CLIENT_PUBLISH | ALLOW_STATS | JWT_ALLOW_ANY_AUDIENCE | ALLOW_ANONYMOUS_PUBLISH => BOOL_FORM,
        CONNECT_ATTEMPTS_PER_IP => ATTEMPTS_PER_IP_FORM,
        CONNECT_WINDOW_SECONDS | PUBLISH_RATE_WINDOW_SECONDS => WINDOW_FORM,
        MAX_CONNECTIONS | MAX_CONNECTIONS_PER_USER | MAX_CONNECTIONS_PER_IP => CAP_FORM,
        JWT_SECRET => JWT_SECRET_FORM,
        HISTORY_SIZE => HISTORY_SIZE_FORM,
        HISTORY_TTL_SECONDS => HISTORY_TTL_FORM,
        JWKS_URL => JWKS_URL_FORM,
        JWT_ISSUER => ISSUER_FORM,
        JWT_AUDIENCE => AUDIENCE_FORM,
        JWKS_MIN_REFETCH_SECONDS => REFETCH_FORM,
        JWT_SECRET_ARN => JWT_SECRET_ARN_FORM,
        SERVER_KEYS => SERVER_KEYS_FORM,
        SERVER_KEY_SECRET_ARN => SERVER_KEY_SECRET_ARN_FORM,
        JWT_SECRET_REFRESH_SECONDS => SECRET_REFRESH_FORM,
        CHANNELS_CLAIM | PUBLISH_CLAIM => CLAIM_FORM,
        OPERATOR_CLAIM => OPERATOR_CLAIM_FORM,
        PUBLISH_RATE_LIMIT => PUBLISH_RATE_FORM,
        PUBLISH_RATE_LIMIT_PER_USER => PUBLISH_RATE_PER_USER_FORM,
        PUBLISH_RATE_LIMIT_PER_IP => PUBLISH_RATE_PER_IP_FORM,
        USER_CAP_MODE => USER_CAP_MODE_FORM,
        STATS_MAX_AGE_SECONDS => STATS_MAX_AGE_FORM,
        AWS_ATTEMPT_TIMEOUT_MS => ATTEMPT_TIMEOUT_FORM,
        AWS_OPERATION_TIMEOUT_MS => OPERATION_TIMEOUT_FORM,
        MESSAGE_RETENTION_SECONDS => MESSAGE_RETENTION_FORM,
        FAILURE_QUEUE_URL => FAILURE_QUEUE_URL_FORM,
        _ => return None,
    };
    Some(form)
}
