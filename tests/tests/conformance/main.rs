//! Conformance to the rule book (R1..R66) where only a real server and `dlock-client` can show
//! it: the SDK's cancel paths (t65), the end of a session by close, lease expiry and reconnect
//! (t66), an unlock the server refuses (t67), and a random concurrent workload checked
//! against the rules' invariants (t6r). One test binary; each numbered module is one topic.
//!
//! The rules themselves are specified once, by the exact-event scenario tests of dlock-core
//! (`dlock-core/tests/*.rs`); that the wire and the SDK carry every command, option, reply and
//! error intact is the job of the e2e binary (`t59_wire_table`). The end-to-end twins of the
//! rule tests were removed; each one's engine successor (file::test in dlock-core/tests):
//!
//! ```text
//! t60 r07_compatibility_matrix_all_36_pairs        basic::r7_noqueue_request_against_each_held_mode
//! t60 r10_compatible_request_waits_behind_queued_  basic::r10_no_queue_jumping_and_r34_no_notification_for_fifo_waiters,
//!                                                  conversions::r22_noqueue_new_request
//! t60 r10_nl_request_waits_behind_queued_request   basic::r10_nl_request_waits_behind_queued_request_and_one_pass_grants_both
//! t60 r10_r13_new_request_waits_behind_queued_conv basic::r10_r13_new_request_waits_until_the_convert_queue_is_empty
//! t60 r11_conversion_granted_in_place_despite_wait basic::r11_conversion_granted_in_place_ignores_queues
//! t60 r11_..._despite_queued_conversion            conversions::r11_r21_quecvt_queues_where_a_plain_conversion_is_granted_in_place
//! t60 r12_wait_queue_fifo_stops_at_first_blocked   basic::r12_wait_queue_fifo_stops_at_the_first_blocked_then_grants_the_rest_in_one_pass
//! t60 r12_convert_queue_head_first                 basic::r12_convert_queue_head_first_and_nothing_passes_a_blocked_head
//! t61 r15_convert_while_pending_is_busy_raw        conversions::r15_only_a_granted_lock_converts
//! t61 r16_same_mode_conversion_granted_at_once_... conversions::r16_same_mode_conversion_of_every_mode_with_a_waiter_and_a_published_value
//! t61 r17_down_conversions_granted_at_once_...     conversions::r17_every_down_conversion_is_granted_at_once_and_runs_a_grant_pass
//! t61 r08_middle_conversions                       conversions::r8_middle_conversions_are_granted_when_compatible
//! t61 r18_queued_conversion_keeps_blocking_...     conversions::r18_queued_conversion_blocks_later_conversions_and_requests_with_its_old_mode
//! t61 r19_noqueue_conversion                       conversions::r19_noqueue_conversion_fails_and_keeps_the_lock,
//!                                                  conversions::r19_noqueue_conversion_is_never_a_deadlock_and_notifies_nobody
//! t61 r20_two_pr_holders_convert_to_ex             conversions::r20_two_pr_holders_converting_to_ex_second_is_the_victim
//! t61 r20_quecvt_conversion_deadlock               conversions::r20_quecvt_behind_a_conversion_that_waits_for_us_is_refused
//! t61 r21_quecvt_allowed_conversions               conversions::r21_quecvt_matrix_through_the_engine
//! t61 r21_quecvt_queues_behind_queued_conversion   conversions::r11_r21_quecvt_queues_where_a_plain_conversion_is_granted_in_place,
//!                                                  conversions::r21_quecvt_waits_behind_queued_conversions
//! t61 r20_conversion_deadlock_with_non_head_conv   conversions::r20_conversion_deadlock_with_a_conversion_behind_the_head
//! t62 r24_new_resource_value_block_is_zero_...     value_block::r24_a_new_lock_of_every_mode_reads_the_fresh_block,
//!                                                  value_block::r24_new_resource_reads_zeros_valid_and_values_are_padded
//! t62 r25_value_block_is_opt_in                    value_block::r25_without_valblk_nothing_is_read_or_written,
//!                                                  value_block::r25_without_valblk_an_invalid_block_is_neither_read_nor_reported
//! t62 r26_value_block_table_all_cells              value_block::r26_every_row_of_the_table
//! t62 r27_queued_request_reads_at_grant            value_block::r27_queued_request_reads_the_value_written_by_the_release
//! t62 r28_unlock_writes_only_from_pw_or_ex         value_block::r28_unlock_with_a_value_from_every_mode,
//!                                                  value_block::r28_unlock_writes_only_from_pw_or_ex_with_valblk
//! t62 r29a_r30_ivvalblk_and_valnotvalid_until_...  value_block::r29a_ivvalblk_invalidates_from_pw_or_ex_and_r30_a_write_revalidates,
//!                                                  value_block::r29a_ivvalblk_below_pw_does_nothing_and_from_pw_down_conversion_invalidates
//! t62 r29b_value_block_invalid_when_pw_or_ex_...   value_block::r29b_session_end_with_pw_or_ex_invalidates,
//!                                                  value_block::r29b_closing_a_pw_or_ex_holder_or_a_converting_pw_lock_invalidates
//! t62 r30_destroyed_resource_starts_fresh          value_block::r29a_ivvalblk_invalidates_from_pw_or_ex_and_r30_a_write_revalidates
//! t63 r32_incompatible_holders_are_notified_...    blocking::r32_every_incompatible_holder_is_told_of_a_queued_request
//! t63 r32_queued_conversion_notifies_holders       blocking::r32_r33_r34_r37_who_is_notified_when_a_request_is_queued
//! t63 r34_compatible_holders_are_not_notified      blocking::r34_compatible_holders_are_not_told
//! t63 r34_no_notification_for_immediate_grant_...  blocking::r34_nothing_for_immediate_grants_noqueue_failures_or_deadlock_victims
//! t63 r34_no_notification_for_deadlock_victim      blocking::r34_nothing_for_immediate_grants_noqueue_failures_or_deadlock_victims
//! t63 r34_no_notification_for_fifo_only_wait       blocking::r32_r33_r34_r37_who_is_notified_when_a_request_is_queued
//! t63 r33_converting_lock_is_not_notified_raw      blocking::r32_r33_r34_r37_who_is_notified_when_a_request_is_queued
//! t63 r35_lock_granted_in_pass_is_notified         basic::r12_grant_pass_stops_at_first_blocked_head
//! t63 r35_holder_notified_again_after_in_place_... blocking::r35_told_again_after_a_down_and_an_up_conversion_in_place
//! t63 r36_notification_revokes_nothing             blocking::r32_r33_r34_r37_who_is_notified_when_a_request_is_queued,
//!                                                  blocking::r35_r37_notified_again_after_each_grant_of_its_own
//! t64 r41_two_sessions_two_resources_youngest_...  deadlock::r39_r41_two_sessions_two_resources_arriving_request_is_the_victim
//! t64 r41_three_sessions_three_resources           deadlock::r39_three_sessions_three_resources
//! t64 r41_conversion_victim_keeps_old_mode         deadlock::r41_conversion_victim_on_another_resource_keeps_its_old_mode_and_token
//! t64 r39_session_waiting_for_itself_is_a_deadlock deadlock::r39_self_deadlock_through_another_lock_of_the_same_session,
//!                                                  conversions::r39_a_session_never_waits_for_itself
//! t64 r39b_cycle_through_compatible_predecessor    deadlock::r39b_waiting_behind_a_compatible_but_blocked_request
//! t64 r40_in_place_conversion_closing_a_cycle      deadlock::r40_in_place_conversion_refuses_the_converters_own_request_and_grants_behind_it
//! t64 r42_no_false_positives                       deadlock::r42_no_false_positives,
//!                                                  deadlock::r42_a_chain_ending_at_an_owner_who_does_not_wait_is_no_deadlock
//! t64 r42_broken_cycle_is_not_reported             deadlock::r42_no_false_positives,
//!                                                  deadlock::r42_a_cycle_broken_by_a_cancel_or_a_session_end_is_not_reported
//! t64 r41_in_place_conversion_refuses_youngest_... deadlock::r40_in_place_conversion_closing_a_cycle_refuses_the_youngest_request
//! t64 r40_queued_conversion_closes_cycle_through_  deadlock::r39_r40_queued_conversion_closes_a_cycle_through_a_waiter_behind_it
//! t64 r40_queued_conversion_ahead_of_own_waiting_  deadlock::r39_r40_queued_conversion_ahead_of_its_own_sessions_waiting_request
//! t65 r44_unlock_releases_and_runs_grant_pass      unlock_cancel::r44_unlock_grants_the_waiter_and_the_last_unlock_ends_the_resource
//! t65 r45_unlock_of_pending_lock_is_busy_raw       unlock_cancel::r45_unlock_of_a_pending_lock_is_busy
//! t65 r46_cancelled_request_completes_and_its_id_  unlock_cancel::r46_r52_a_cancelled_requests_id_is_unknown_to_every_command
//! t65 r47_cancel_conversion_keeps_old_mode_and_... unlock_cancel::r47_cancel_a_conversion_keeps_the_old_mode_and_lets_waiters_in
//! t65 r48_cancel_with_nothing_pending              unlock_cancel::r48_cancel_with_nothing_pending,
//!                                                  unlock_cancel::r48_a_cancel_after_the_conversion_was_granted_finds_nothing_pending
//! t65 r52_unknown_ids_are_not_found_raw            unlock_cancel::r6_r52_another_sessions_lock_is_unknown,
//!                                                  basic::uncontended_lock_and_unlock_destroy_the_resource_r1
//! t65 r65_request_timeout                          timeouts::r65_waiting_request_times_out_like_a_cancel
//! t65 r65_conversion_timeout_keeps_old_mode        timeouts::r65_timed_out_conversion_lets_a_waiter_behind_the_convert_queue_in
//! t67 r54_empty_name_is_invalid                    validation::r54_static_checks_in_order
//! t67 r54_name_length_limits                       validation::r1_r54_binary_names_up_to_the_maximum_and_value_arguments_of_a_conversion
//! t67 r54_value_block_arguments                    validation::r1_r54_binary_names_up_to_the_maximum_and_value_arguments_of_a_conversion,
//!                                                  validation::r55_arguments_then_lookup_then_granted_mode_checks_then_state
//! t67 r54_quecvt_on_new_request_is_invalid_raw     validation::r54_static_checks_in_order
//! t67 r56_unsupported_and_unknown_flags_are_inv... validation::r56_every_optional_flag_is_rejected_on_every_command,
//!                                                  validation::r54_unknown_flag_bits_are_invalid_on_every_command
//! t67 r55_order_of_checks_raw                      validation::r55_arguments_then_lookup_then_granted_mode_checks_then_state
//! t68 r01_r02_independent_locks_and_resource_life  queries::r1_r2_each_request_is_its_own_lock_and_the_resource_ends_with_the_last
//! t68 r22_noqueue_new_request                      conversions::r22_r23_noqueue_fails_behind_a_queued_conversion_and_is_decided_at_its_place
//! t68 r23_noqueue_decided_at_its_place_in_order    conversions::r22_r23_noqueue_fails_behind_a_queued_conversion_and_is_decided_at_its_place
//! t68 r66_queries                                  queries::r66_resource_queues_with_owners_tokens_and_times,
//!                                                  queries::r66_resources_by_prefix_in_name_order_with_a_limit,
//!                                                  queries::r66_session_lists_its_locks_by_id
//! t68 fencing_tokens_strictly_increase_per_resour  queries::tokens_grow_with_every_grant_new_by_a_pass_and_by_each_conversion
//! t68 fencing_tokens_grow_across_restart           (e2e) t35_restart::tokens_and_ids_keep_growing_after_an_abort_and_restart
//! t69 r47_cancel_of_convert_queue_head_grants_...  edge_cases::r47_r12_cancelling_the_convert_queue_head_grants_the_conversion_behind_it
//! t69 r65_timeout_of_convert_queue_head_grants_... edge_cases::r65_r12_a_timed_out_convert_queue_head_lets_the_conversion_behind_it_through
//! t69 r50_session_end_of_convert_queue_head_...    edge_cases::r50_r12_the_end_of_the_convert_queue_heads_session_lets_the_next_through
//! t69 r39_request_behind_own_queued_request        edge_cases::r39b_r10_a_request_behind_its_own_sessions_queued_request
//! t69 r27_queued_conversion_reads_value_at_grant   edge_cases::r27_r30_a_queued_conversion_reads_the_value_block_when_granted
//! t69 r29b_waiting_ex_request_of_dead_session_...  edge_cases::r29b_a_dead_sessions_waiting_ex_request_leaves_the_value_block_valid
//! t69 r35_notification_after_cancel_grant_pass     edge_cases::r35_the_pass_after_a_cancel_tells_the_lock_it_granted_of_what_still_waits
//! ```

mod t65_conformance_unlock_cancel;
mod t66_conformance_sessions;
mod t67_conformance_validation;
mod t6r_conformance_random;
